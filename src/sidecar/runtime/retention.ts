/**
 * Archive retention on the node: archives older than the max age go, then the oldest go until the
 * rest fit the max bytes. Each deletion takes the agent's key lock (the one its cleanup holds), so it
 * never races that agent's archiving; in-progress temp directories (hidden) are never touched.
 */
import { lstat, readdir, rm } from './boundedFs.js';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { z } from 'zod';
import { MANIFEST_FILE } from './archive.js';
import { errnoOf, errorMessage, readOptional } from './files.js';
import { withKeyLock } from './wait.js';
import { isAgentUid, nodePaths } from './workspace.js';

export interface ArchiveEntry {
  dir: string;
  /** The agent's UID (from the manifest, else the directory name), for its key lock. */
  uid?: string;
  bytes: number;
  /** When it was archived (its manifest), else the directory's mtime. */
  archivedAtMs: number;
}

export interface RetentionPolicy {
  /** Archives older than this go; undefined: no age limit. */
  maxAgeMs?: number;
  /** The archives together hold at most this much; undefined: no size limit. */
  maxBytes?: number;
}

export type RetentionReason = 'age' | 'size';
export const RETENTION_REASONS: readonly RetentionReason[] = ['age', 'size'];

export interface Deletion {
  entry: ArchiveEntry;
  reason: RetentionReason;
}

/** What to delete (pure): past the max age, then oldest first until the rest fit the max bytes. */
export function planRetention(archives: readonly ArchiveEntry[], policy: RetentionPolicy, nowMs: number): Deletion[] {
  const oldestFirst = [...archives].sort((a, b) => a.archivedAtMs - b.archivedAtMs || (a.dir < b.dir ? -1 : a.dir > b.dir ? 1 : 0));
  const out: Deletion[] = [];
  const kept: ArchiveEntry[] = [];
  for (const entry of oldestFirst) {
    if (policy.maxAgeMs !== undefined && nowMs - entry.archivedAtMs > policy.maxAgeMs) out.push({ entry, reason: 'age' });
    else kept.push(entry);
  }
  if (policy.maxBytes !== undefined) {
    let total = kept.reduce((n, e) => n + e.bytes, 0);
    for (const entry of kept) {
      if (total <= policy.maxBytes) break;
      out.push({ entry, reason: 'size' });
      total -= entry.bytes;
    }
  }
  return out;
}

const manifestHead = z.object({ uid: z.string(), archivedAt: z.string() });

async function lstatOptional(path: string) {
  try {
    return await lstat(path);
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return undefined;
    throw err;
  }
}

async function readdirOptional(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (err) {
    if (errnoOf(err) === 'ENOENT' || errnoOf(err) === 'ENOTDIR') return [];
    throw err;
  }
}

/** One archive as found: its size (regular files, links not followed), age and agent. */
async function readEntry(dir: string, base: string, mtimeMs: number): Promise<ArchiveEntry> {
  let bytes = 0;
  for (const name of await readdirOptional(dir)) {
    const st = await lstatOptional(join(dir, name));
    if (st?.isFile()) bytes += st.size;
  }
  let uid = /([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/.exec(base)?.[1];
  let archivedAtMs = mtimeMs;
  const m = manifestHead.safeParse(
    await readOptional(join(dir, MANIFEST_FILE))
      .then((raw) => (raw ? JSON.parse(raw.toString('utf8')) : undefined) as unknown)
      .catch(() => undefined),
  );
  if (m.success) {
    uid = m.data.uid;
    const at = Date.parse(m.data.archivedAt);
    if (Number.isFinite(at)) archivedAtMs = at;
  }
  return { dir, bytes, archivedAtMs, ...(isAgentUid(uid) ? { uid } : {}) };
}

/** Every archive under `archiveDir` (`<ns>/<name>-<uid>` and `_orphans/<uid>`); hidden temp directories are not archives. */
export async function listArchives(archiveDir: string): Promise<ArchiveEntry[]> {
  const out: ArchiveEntry[] = [];
  for (const parent of await readdirOptional(archiveDir)) {
    const pst = await lstatOptional(join(archiveDir, parent));
    if (parent.startsWith('.') || !pst?.isDirectory()) continue;
    for (const base of await readdirOptional(join(archiveDir, parent))) {
      const dir = join(archiveDir, parent, base);
      const st = await lstatOptional(dir);
      if (base.startsWith('.') || !st?.isDirectory()) continue;
      out.push(await readEntry(dir, base, st.mtimeMs));
    }
  }
  return out;
}

export interface RetentionResult {
  deleted: Deletion[];
  /** Bytes the archives hold after this pass. */
  remainingBytes: number;
  errors: string[];
}

/** Applies the policy once: each deletion logged (and reported to `onDelete`, for the metrics). */
export async function enforceRetention(o: {
  root: string;
  archiveDir: string;
  policy: RetentionPolicy;
  logger: Logger;
  now?: () => number;
  onDelete?: (d: Deletion) => void;
}): Promise<RetentionResult> {
  const archives = await listArchives(o.archiveDir);
  const nowMs = (o.now ?? Date.now)();
  const plan = planRetention(archives, o.policy, nowMs);
  const deleted: Deletion[] = [];
  const errors: string[] = [];
  const root = nodePaths(o.root).root;
  for (const d of plan) {
    const remove = () => rm(d.entry.dir, { recursive: true, force: true });
    try {
      await (d.entry.uid ? withKeyLock(`${root}\0${d.entry.uid}`, remove) : remove());
      deleted.push(d);
      o.onDelete?.(d);
      o.logger.info(
        { archive: d.entry.dir, uid: d.entry.uid, reason: d.reason, bytes: d.entry.bytes, ageSeconds: Math.round((nowMs - d.entry.archivedAtMs) / 1000) },
        `archive deleted (retention: ${d.reason === 'age' ? 'older than the max age' : 'archives over the max size, oldest first'})`,
      );
    } catch (err) {
      errors.push(`${d.entry.dir}: ${errorMessage(err)}`);
      o.logger.warn({ archive: d.entry.dir, err: errorMessage(err) }, 'could not delete an archive');
    }
  }
  const gone = new Set(deleted.map((d) => d.entry.dir));
  return { deleted, remainingBytes: archives.filter((a) => !gone.has(a.dir)).reduce((n, a) => n + a.bytes, 0), errors };
}
