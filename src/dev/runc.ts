/**
 * Running an OCI bundle with runc (Debian's; it runs on cgroup v1 hosts too), in a state root of
 * its own so containers of different runs never meet. `remove()` kills and `runc delete --force`s
 * the container and removes its bundle and state root; callers run it also on failure.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import type { Logger } from 'pino';
import type { OciSpec } from './ociSpec.js';
import { startProcess, type ManagedProcess } from './processes.js';
import { requireTool, run } from './tools.js';

const RUNC_TIMEOUT_MS = 60_000;

export interface Bundle {
  id: string;
  dir: string;
  /** runc --root: container state, private to this bundle. */
  stateRoot: string;
}

async function createBundle(id: string, spec: OciSpec): Promise<Bundle> {
  requireTool('runc');
  const dir = await mkdtemp(join(tmpdir(), `oci-${id}-`));
  await writeFile(join(dir, 'config.json'), JSON.stringify(spec, null, 2));
  return { id, dir, stateRoot: join(dir, 'runc-state') };
}

async function destroy(b: Bundle, logger: Logger): Promise<void> {
  const runc = (args: string[]) => execa('runc', ['--root', b.stateRoot, ...args], { timeout: RUNC_TIMEOUT_MS, reject: false });
  const deleted = await runc(['delete', '--force', b.id]);
  if (deleted.exitCode !== 0 && !/does not exist/.test(deleted.stderr)) logger.warn({ id: b.id, stderr: deleted.stderr }, 'runc delete --force failed');
  await rm(b.dir, { recursive: true, force: true });
}

export interface RunningContainer {
  bundle: Bundle;
  /** The runc process (foreground `runc run`, which proxies signals to the container's init). */
  runc: ManagedProcess;
  /** The container's init as the host sees it. */
  initPid(): Promise<number>;
  /** `runc exec`: the container's process settings (user, capabilities, no_new_privs) with other args. */
  exec(args: string[], timeoutMs?: number): Promise<{ exitCode: number; stdout: string; stderr: string }>;
  remove(): Promise<void>;
}

/** Starts a long-running container; its output goes to `runc.logPath`. */
export async function startContainer(id: string, spec: OciSpec, logger: Logger): Promise<RunningContainer> {
  const bundle = await createBundle(id, spec);
  let proc: ManagedProcess | undefined;
  const remove = async () => {
    await proc?.stop(15_000);
    await destroy(bundle, logger);
  };
  try {
    proc = await startProcess({ name: id, command: 'runc', args: ['--root', bundle.stateRoot, 'run', '--bundle', bundle.dir, id], stateDir: bundle.dir, logger });
  } catch (err) {
    await remove();
    throw err;
  }
  const runc = proc;
  return {
    bundle,
    runc,
    remove,
    initPid: async () => {
      const state = JSON.parse(await run('runc', ['--root', bundle.stateRoot, 'state', id], { timeoutMs: RUNC_TIMEOUT_MS })) as { pid: number; status: string };
      if (state.status !== 'running') throw new Error(`container ${id} is ${state.status}`);
      return state.pid;
    },
    exec: async (args, timeoutMs = RUNC_TIMEOUT_MS) => {
      const r = await execa('runc', ['--root', bundle.stateRoot, 'exec', id, ...args], { timeout: timeoutMs, reject: false, stdin: 'ignore' });
      if (r.timedOut) throw new Error(`runc exec ${id} ${args.join(' ')} timed out after ${timeoutMs} ms`);
      return { exitCode: r.exitCode ?? 1, stdout: r.stdout, stderr: r.stderr };
    },
  };
}

/** Runs a container to its end and returns what it printed. */
export async function runContainer(id: string, spec: OciSpec, logger: Logger, timeoutMs = RUNC_TIMEOUT_MS): Promise<{ exitCode: number; stdout: string; stderr: string }> {
  const bundle = await createBundle(id, spec);
  try {
    const r = await execa('runc', ['--root', bundle.stateRoot, 'run', '--bundle', bundle.dir, id], { timeout: timeoutMs, reject: false, stdin: 'ignore' });
    if (r.timedOut) throw new Error(`runc run ${id} timed out after ${timeoutMs} ms:\n${r.stderr}`);
    return { exitCode: r.exitCode ?? 1, stdout: r.stdout, stderr: r.stderr };
  } finally {
    await destroy(bundle, logger);
  }
}
