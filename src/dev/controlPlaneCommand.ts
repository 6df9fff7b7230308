/**
 * `agent-operator dev --control-plane-only --state-dir DIR`: a local control plane with the CRDs
 * installed, in the foreground until SIGINT/SIGTERM. DIR/env holds the lines a shell needs:
 * `source DIR/env` and kubectl talks to it.
 */
import { rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Logger } from 'pino';
import { startControlPlane } from './controlPlane.js';
import { installCrds } from './crds.js';
import { stderrLogger } from './logger.js';

/** Single-quoted for POSIX shells, so any path survives `source`. */
function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

export function envFileLines(kubeconfigPath: string, binDir: string): string[] {
  return [`export KUBECONFIG=${shellQuote(kubeconfigPath)}`, `export PATH=${shellQuote(binDir)}:"$PATH"`];
}

/** Resolves with the first of the given signals to arrive. */
function nextSignal(signals: NodeJS.Signals[]): Promise<NodeJS.Signals> {
  return new Promise((done) => {
    const handlers = signals.map((sig) => {
      const h = () => {
        signals.forEach((s, i) => process.removeListener(s, handlers[i]!));
        done(sig);
      };
      process.on(sig, h);
      return h;
    });
  });
}

export async function runControlPlaneOnly(opts: { stateDir: string; logger?: Logger }): Promise<number> {
  const logger = opts.logger ?? stderrLogger('dev');
  const stateDir = resolve(opts.stateDir);
  // Listen before starting so a Ctrl-C during startup still stops what was started.
  const signalled = nextSignal(['SIGINT', 'SIGTERM']);
  const cp = await startControlPlane({ stateDir, logger });
  const envPath = join(stateDir, 'env');
  try {
    const crds = await Promise.race([installCrds(cp.kubeconfigPath), signalled.then(() => undefined)]);
    if (crds) {
      const lines = envFileLines(cp.kubeconfigPath, cp.binDir);
      await writeFile(envPath, `${lines.join('\n')}\n`);
      logger.info({ crds, envFile: envPath }, 'control plane up; source the env file to use it; Ctrl-C stops it');
      console.log(lines.join('\n'));
      const sig = await signalled;
      logger.info({ signal: sig }, 'stopping the control plane');
    }
  } finally {
    // The env file would point at a dead cluster.
    await rm(envPath, { force: true });
    await cp.stop();
  }
  return 0;
}
