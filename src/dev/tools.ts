/**
 * External commands of the dev tooling (buildah, debootstrap, runc, npm, tar): a missing one is an
 * error naming it and its Debian package, and every run has a timeout.
 */
import { execa } from 'execa';
import { onPath } from './processes.js';

const IMAGE_TOOLS = new Set(['buildah', 'debootstrap']);

/** The error for a missing tool: its name and its Debian package (each tool is its own). */
export function missingTool(command: string): Error {
  const why = IMAGE_TOOLS.has(command)
    ? " Building the image without a Docker engine needs buildah and debootstrap (apt-get install buildah debootstrap); with a Docker engine, 'docker build .' builds the same Dockerfile."
    : '';
  return new Error(`${command} is not installed (Debian package '${command}': apt-get install ${command}).${why}`);
}

export function requireTool(command: string): void {
  if (!onPath(command)) throw missingTool(command);
}

interface RunOptions {
  timeoutMs: number;
  cwd?: string;
  /** Called with the output as it comes (progress of long steps). */
  output?: (chunk: string) => void;
}

/** An external command with a timeout; a failure quotes the end of its output. */
export async function run(command: string, args: string[], o: RunOptions): Promise<string> {
  if (!command.startsWith('/')) requireTool(command);
  const child = execa(command, args, { timeout: Math.max(1000, o.timeoutMs), reject: false, all: true, stdin: 'ignore', ...(o.cwd ? { cwd: o.cwd } : {}) });
  if (o.output) child.all?.on('data', (b: Buffer) => o.output!(b.toString()));
  const r = await child;
  if (r.failed) {
    const tail = (r.all ?? r.message).split('\n').slice(-30).join('\n');
    throw new Error(`${command} ${args.join(' ')} ${r.timedOut ? `timed out after ${o.timeoutMs} ms` : `failed (exit ${r.exitCode})`}:\n${tail}`);
  }
  return r.stdout.trim();
}
