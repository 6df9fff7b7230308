/**
 * The kstatus check: sigs.k8s.io/cli-utils' status computation (what Flux, kpt and cli-utils
 * waiters decide from an object), built once per cli-utils version into the cache from the pinned
 * wrapper module in hack/kstatus, and run on objects as JSON.
 */
import { existsSync } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import type { Logger } from 'pino';
import { acquireLock, cacheRoot, goBuild, goVersion, requiredVersion } from './binaries.js';
import { HACK_KSTATUS_DIR } from './paths.js';

export const CLI_UTILS_MODULE = 'sigs.k8s.io/cli-utils';

/** kstatus' verdicts (status.Status). */
export type KstatusStatus = 'InProgress' | 'Failed' | 'Current' | 'Terminating' | 'NotFound' | 'Unknown';

export interface KstatusResult {
  namespace: string;
  name: string;
  status: KstatusStatus;
  message: string;
}

export function kstatusPath(env: NodeJS.ProcessEnv = process.env): string {
  const version = requiredVersion(join(HACK_KSTATUS_DIR, 'go.mod'), CLI_UTILS_MODULE);
  return join(cacheRoot(env), 'kstatus', `cli-utils-${version}`, 'kstatus');
}

/** The kstatus binary, built on first use (a few seconds warm, a minute or two with cold module downloads). */
export async function ensureKstatus(opts: { logger: Logger; env?: NodeJS.ProcessEnv; buildTimeoutMs?: number }): Promise<string> {
  const path = kstatusPath(opts.env);
  if (existsSync(path)) return path;
  const deadline = Date.now() + (opts.buildTimeoutMs ?? 15 * 60_000);
  const lock = await acquireLock(`${path}.lock`, { deadline, done: () => existsSync(path), logger: opts.logger, what: 'the kstatus check' });
  if (!lock) return path;
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    if (existsSync(path)) return path;
    const go = await goVersion(`the kstatus check (${path}) cannot be built: Go is not installed (https://go.dev/dl/, >= the version in hack/kstatus/go.mod)`);
    opts.logger.info({ path, go }, 'building the kstatus check from hack/kstatus (once per cli-utils version)');
    await mkdir(join(path, '..'), { recursive: true });
    await goBuild({ what: 'the kstatus check', cwd: HACK_KSTATUS_DIR, args: ['build', '-trimpath', '-o', tmp, '.'] }, deadline, opts.logger);
    await rename(tmp, path); // atomic: readers see no binary or a complete one
    return path;
  } finally {
    await rm(tmp, { force: true });
    await lock.release();
  }
}

/** kstatus' verdict on each object (the objects as the API server returns them). */
export async function computeKstatus(binary: string, objects: readonly unknown[]): Promise<KstatusResult[]> {
  const r = await execa(binary, [], { input: objects.map((o) => JSON.stringify(o)).join('\n'), timeout: 30_000, reject: false });
  if (r.failed) throw new Error(`${binary} failed (${r.timedOut ? 'timed out' : `exit ${r.exitCode}`}): ${r.stderr}`);
  return r.stdout
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as KstatusResult);
}
