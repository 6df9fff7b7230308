/**
 * The node-local allocator of agent uids: each live agent gets its own uid (and the gid of the same
 * number) from a configured range that excludes 0 and the sidecar's own uid. The allocation is kept
 * in the agent's node-owned state (`sandbox-uid`), so it survives a sidecar restart, and it is free
 * again only once the agent's state directory is gone (cleanup deletes it after its processes) and
 * no process runs as it.
 */
import { readdir, readFile } from './boundedFs.js';
import { join } from 'node:path';
import { errnoOf, readOptional, writeFileAtomic } from './files.js';
import { coalesce } from './coalesce.js';
import { withKeyLock } from './wait.js';
import { isAgentUid, nodePaths, type WorkspacePaths } from './workspace.js';

export interface UidRange {
  /** First uid of the range. */
  first: number;
  /** How many uids. */
  count: number;
}

export const DEFAULT_UID_RANGE = '200000-265535';
const MAX_ID = 2 ** 32 - 2; // (uid_t)-1 is "no uid"

/** Parses `FIRST-LAST` (inclusive) and refuses 0 and `forbidden` (the sidecar's uid). */
export function parseUidRange(text: string, forbidden: readonly number[] = []): UidRange {
  const m = /^(\d+)-(\d+)$/.exec(text.trim());
  if (!m) throw new Error(`invalid uid range ${JSON.stringify(text)}: expected FIRST-LAST, e.g. ${DEFAULT_UID_RANGE}`);
  const first = Number(m[1]);
  const last = Number(m[2]);
  if (first < 1 || last < first || last > MAX_ID) throw new Error(`invalid uid range ${text}: need 1 <= FIRST <= LAST <= ${MAX_ID}`);
  for (const id of forbidden) if (id >= first && id <= last) throw new Error(`invalid uid range ${text}: it contains uid ${id}, which the sidecar runs as`);
  return { first, count: last - first + 1 };
}

/** The lowest uid of the range not in `used` (pure), or undefined when all are taken. */
export function pickUid(range: UidRange, used: ReadonlySet<number>): number | undefined {
  for (let id = range.first; id < range.first + range.count; id++) if (!used.has(id)) return id;
  return undefined;
}

export function parseUidFile(text: string | undefined): number | undefined {
  const t = text?.trim();
  return t && /^\d{1,10}$/.test(t) ? Number(t) : undefined;
}

/** The uid recorded for one agent, if any. */
export async function readSandboxUid(paths: WorkspacePaths): Promise<number | undefined> {
  return parseUidFile((await readOptional(paths.sandboxUid))?.toString('utf8'));
}

async function usedUids(root: string): Promise<Set<number>> {
  const { agentsDir } = nodePaths(root);
  let names: string[];
  try {
    names = await readdir(agentsDir);
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return new Set();
    throw err;
  }
  const ids = await Promise.all(names.filter(isAgentUid).map(async (uid) => parseUidFile((await readOptional(join(agentsDir, uid, 'sandbox-uid')))?.toString('utf8'))));
  return new Set(ids.filter((id): id is number => id !== undefined));
}

/**
 * The uids of the range that own a live process (the kernel's word: a uid whose agent's state is
 * gone while something of it still runs is not free).
 */
async function uidsWithProcesses(range: UidRange): Promise<Set<number>> {
  const out = new Set<number>();
  const pids = (await readdir('/proc')).filter((n) => /^\d+$/.test(n));
  await Promise.all(
    pids.map(async (pid) => {
      const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
      const real = Number(/^Uid:\s+(\d+)/m.exec(status)?.[1] ?? -1);
      if (real >= range.first && real < range.first + range.count && !/^State:\s+Z/m.test(status)) out.add(real);
    }),
  );
  return out;
}

const scans = new Map<string, () => Promise<Set<number>>>();

/**
 * The uids of the range that own a live process, from a /proc scan that starts after this call;
 * one scan per range at a time, shared by whoever asks meanwhile (coalesce.ts).
 */
export function processUids(range: UidRange): Promise<Set<number>> {
  const key = `${range.first}+${range.count}`;
  let scan = scans.get(key);
  if (!scan) scans.set(key, (scan = coalesce(() => uidsWithProcesses(range))));
  return scan();
}

/** How many agent state directories (recorded uids) were removed in this process: see allocateUid. */
let released = 0;

/** Called once an agent's state directory (its sandbox-uid) was removed, or its removal tried. */
export function uidReleased(): void {
  released++;
}

/**
 * The agent's uid: the one it already has, else the lowest free one, recorded before it is used.
 * One allocation at a time per node root, so two launches never pick the same uid.
 *
 * The /proc scan, the slow part, runs before the lock and is shared by launches that start
 * together. A scan from before the lock misses only a uid that got a process after it began, which
 * takes a launch that recorded it; that uid is still recorded when the lock reads the records,
 * unless its state was removed meanwhile (uidReleased): then the scan is redone under the lock.
 */
export async function allocateUid(paths: WorkspacePaths, range: UidRange): Promise<number> {
  // Asked for at the call, before anything is awaited: a scan that starts later than the call is not needed.
  const since = released;
  const early = processUids(range);
  early.catch(() => undefined); // awaited below, or replaced by a scan under the lock
  const already = await readSandboxUid(paths);
  if (already !== undefined) return already;
  return withKeyLock(`uids\0${paths.root}`, async () => {
    const mine = await readSandboxUid(paths);
    if (mine !== undefined) return mine;
    const recorded = await usedUids(paths.root);
    // After the records: a removal before they were read shows here.
    const running = released === since ? await early : await uidsWithProcesses(range);
    const id = pickUid(range, new Set([...recorded, ...running]));
    if (id === undefined) throw new Error(`no free agent uid: all ${range.count} uids from ${range.first} are held by agents on this node or run a process`);
    await writeFileAtomic(paths.sandboxUid, `${id}\n`, 0o600);
    return id;
  });
}
