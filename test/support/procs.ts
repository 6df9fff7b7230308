/** Processes as tests see them through /proc. */
import { readFile } from 'node:fs/promises';
import { isGone, parseStat } from '../../src/sidecar/runtime/procfs.js';

/** Whether a process with this pid still exists (not a zombie). */
export async function alive(pid: number): Promise<boolean> {
  const info = parseStat(await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => ''));
  return info !== undefined && !isGone(info);
}

/** Those of `pids` that are alive, in order. */
export async function livePids(pids: readonly number[]): Promise<number[]> {
  const states = await Promise.all(pids.map(alive));
  return pids.filter((_, i) => states[i]);
}
