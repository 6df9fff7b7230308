/**
 * The log archive of one agent: `<archive>/<namespace>/<name>-<uid>/` (or `<archive>/_orphans/<uid>/`
 * when the agent's identity is unknown), holding copies of its workspace files and a manifest.json
 * with their sizes and SHA-256. An archive is built in a hidden temp directory beside it and renamed
 * into place only once every copy is verified, so a crash never leaves a half archive under the
 * final name; leftover temp directories are removed by the next run.
 */
import { randomBytes } from 'node:crypto';
import { constants, createReadStream, createWriteStream } from 'node:fs';
import { copyFile, mkdir, readdir, rename, rm, stat, writeFile } from './boundedFs.js';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { z } from 'zod';
import { digestFile, errnoOf, exists, fsyncDir, fsyncFile, readOptional, writeFileAtomic, type FileDigest } from './files.js';
import { assertAgentUid, assertObjectRef } from './workspace.js';

/** Workspace files that are archived when present (the prompt and scratch/ never are). */
export const ARCHIVED_FILES = ['output.log', 'reports.jsonl', 'findings.jsonl', 'agent.json', 'exit-code', 'launch-error'] as const;

/** One archived file: a workspace file, or several concatenated (the output's tail, from its ring). */
export interface ArchiveSource {
  name: string;
  /** Absolute paths; one part is skipped when missing, several must all exist. */
  parts: readonly string[];
}

/** What is archived from a workspace (pure): ARCHIVED_FILES, then `composed` where it has parts. */
export function archiveSources(dir: string, composed: readonly { name: string; parts: readonly string[] }[] = []): ArchiveSource[] {
  return [...ARCHIVED_FILES.map((name) => ({ name, parts: [join(dir, name)] })), ...composed.filter((c) => c.parts.length > 0)];
}
export const MANIFEST_FILE = 'manifest.json';
/** The cleanup record of the run that completed the archive. */
export const RECORD_FILE = 'cleanup.json';
export const ORPHANS_DIR = '_orphans';
/** Keeps `.tmp-<name>-<uid>.<12 hex>` within NAME_MAX (255). */
const MAX_NAME_IN_DIR = 200;

export interface ArchiveLocation {
  /** `<archive>/<namespace>` or `<archive>/_orphans`. */
  parent: string;
  /** Last path component of the archive directory. */
  base: string;
  dir: string;
}

/** Where an agent's archive lives (pure). `_orphans` cannot clash with a namespace (no `_` in DNS labels). */
export function archiveLocation(archiveDir: string, ref: { uid: string; namespace?: string; name?: string }): ArchiveLocation {
  assertAgentUid(ref.uid);
  let parent: string;
  let base: string;
  if (ref.namespace !== undefined && ref.name !== undefined) {
    assertObjectRef(ref.namespace, ref.name);
    parent = join(archiveDir, ref.namespace);
    base = `${ref.name.slice(0, MAX_NAME_IN_DIR)}-${ref.uid}`;
  } else {
    parent = join(archiveDir, ORPHANS_DIR);
    base = ref.uid;
  }
  return { parent, base, dir: join(parent, base) };
}

/**
 * The archive of `uid` wherever it is, for a caller that no longer knows the agent's namespace and
 * name (its agent.json went with the workspace): `<archive>/<ns>/<name>-<uid>` or `_orphans/<uid>`.
 */
export async function findArchiveLocation(archiveDir: string, uid: string): Promise<ArchiveLocation | undefined> {
  assertAgentUid(uid);
  let parents: string[];
  try {
    parents = await readdir(archiveDir);
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return undefined;
    throw err;
  }
  for (const p of parents.sort()) {
    const parent = join(archiveDir, p);
    let names: string[];
    try {
      names = await readdir(parent);
    } catch (err) {
      if (errnoOf(err) === 'ENOTDIR' || errnoOf(err) === 'ENOENT') continue;
      throw err;
    }
    const base = names.find((n) => !n.startsWith('.') && (n === uid || n.endsWith(`-${uid}`)));
    if (base) return { parent, base, dir: join(parent, base) };
  }
  return undefined;
}

const manifestFileSchema = z.object({
  name: z.string(),
  bytes: z.number().int().min(0),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  modifiedAt: z.string(),
});

/** The output capture's accounting (capture.ts), as the cleanup record carries it. */
const outputSchema = z.object({
  maxBytes: z.number().int().min(0),
  totalBytes: z.number().int().min(0),
  droppedBytes: z.number().int().min(0),
  truncated: z.boolean(),
});

const manifestSchema = z.object({
  version: z.literal(1),
  uid: z.string(),
  namespace: z.string().optional(),
  name: z.string().optional(),
  trigger: z.string().optional(),
  archivedAt: z.string(),
  /** The workspace the files were copied from. */
  sourceDir: z.string(),
  files: z.array(manifestFileSchema),
  output: outputSchema.optional(),
});

export type ManifestFile = z.infer<typeof manifestFileSchema>;
export type Manifest = z.infer<typeof manifestSchema>;

export interface SourceFile extends FileDigest {
  name: string;
  modifiedAt: string;
}

/** The manifest for a set of copied files (pure; files sorted by name). */
export function buildManifest(m: Omit<Manifest, 'version' | 'files'> & { files: readonly SourceFile[] }): Manifest {
  const files = [...m.files].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)).map(({ name, bytes, sha256, modifiedAt }) => ({ name, bytes, sha256, modifiedAt }));
  return {
    version: 1,
    uid: m.uid,
    ...(m.namespace !== undefined ? { namespace: m.namespace } : {}),
    ...(m.name !== undefined ? { name: m.name } : {}),
    ...(m.trigger !== undefined ? { trigger: m.trigger } : {}),
    archivedAt: m.archivedAt,
    sourceDir: m.sourceDir,
    files,
    ...(m.output !== undefined ? { output: m.output } : {}),
  };
}

/**
 * What differs between a manifest and the files' actual digests (pure): each problem as a sentence;
 * empty means the files match. `actual` maps a file name to its digest, or undefined when missing.
 */
export function manifestProblems(files: readonly Pick<ManifestFile, 'name' | 'bytes' | 'sha256'>[], actual: ReadonlyMap<string, FileDigest | undefined>): string[] {
  const problems: string[] = [];
  for (const f of files) {
    const a = actual.get(f.name);
    if (!a) problems.push(`${f.name} is missing`);
    else if (a.bytes !== f.bytes) problems.push(`${f.name} has ${a.bytes} bytes, manifest says ${f.bytes}`);
    else if (a.sha256 !== f.sha256) problems.push(`${f.name} sha256 differs from the manifest`);
  }
  return problems;
}

async function digestOptional(parts: readonly string[]): Promise<FileDigest | undefined> {
  try {
    return await digestFile(parts);
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return undefined;
    throw err;
  }
}

/** Digests of each source (undefined for a missing one). */
export async function digestSources(sources: readonly ArchiveSource[]): Promise<Map<string, FileDigest | undefined>> {
  return new Map(await Promise.all(sources.map(async (s) => [s.name, await digestOptional(s.parts)] as const)));
}

export type ArchiveState = { state: 'absent' } | { state: 'valid'; manifest: Manifest } | { state: 'invalid'; reason: string };

/** An archive's manifest, or why it cannot be read. */
export async function readManifest(dir: string): Promise<Manifest | { invalid: string }> {
  const raw = await readOptional(join(dir, MANIFEST_FILE));
  if (!raw) return { invalid: 'manifest.json is missing' };
  try {
    return manifestSchema.parse(JSON.parse(raw.toString('utf8')));
  } catch (err) {
    return { invalid: `manifest.json is unreadable: ${err instanceof Error ? err.message.slice(0, 200) : String(err)}` };
  }
}

/** Reads an archive directory and recomputes every checksum its manifest lists. */
export async function inspectArchive(dir: string): Promise<ArchiveState> {
  if (!(await exists(dir))) return { state: 'absent' };
  const manifest = await readManifest(dir);
  if ('invalid' in manifest) return { state: 'invalid', reason: manifest.invalid };
  const problems = manifestProblems(manifest.files, await digestSources(manifest.files.map((f) => ({ name: f.name, parts: [join(dir, f.name)] }))));
  return problems.length ? { state: 'invalid', reason: problems.join('; ') } : { state: 'valid', manifest };
}

const tempPrefix = (loc: ArchiveLocation) => `.tmp-${loc.base}.`;
const oldPrefix = (loc: ArchiveLocation) => `.old-${loc.base}.`;

/** Removes temp and superseded directories a crashed run left beside the archive; returns how many. */
export async function removeStaleTemps(loc: ArchiveLocation): Promise<number> {
  let names: string[];
  try {
    names = await readdir(loc.parent);
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return 0;
    throw err;
  }
  const stale = names.filter((n) => n.startsWith(tempPrefix(loc)) || n.startsWith(oldPrefix(loc)));
  await Promise.all(stale.map((n) => rm(join(loc.parent, n), { recursive: true, force: true })));
  return stale.length;
}

/** Copies a source (its parts one after the other) to `dst`. */
async function copySource(parts: readonly string[], dst: string): Promise<void> {
  if (parts.length === 1) {
    await copyFile(parts[0]!, dst, constants.COPYFILE_EXCL);
    return;
  }
  await writeFile(dst, '', { flag: 'wx', mode: 0o600 });
  for (const part of parts) await pipeline(createReadStream(part), createWriteStream(dst, { flags: 'a' }));
}

/** Copies one source and checks the copy against it, twice at most (the source should be quiet by now). */
async function copyVerified(parts: readonly string[], dst: string): Promise<FileDigest> {
  for (let attempt = 1; ; attempt++) {
    const before = await digestFile(parts);
    await rm(dst, { force: true });
    await copySource(parts, dst);
    await fsyncFile(dst);
    const copy = await digestFile(dst);
    if (copy.bytes === before.bytes && copy.sha256 === before.sha256) return copy;
    if (attempt >= 2) throw new Error(`copy of ${parts.join(' + ')} does not match its source (it is still being written?)`);
  }
}

export interface WriteArchiveInput {
  location: ArchiveLocation;
  sourceDir: string;
  /** Default archiveSources(sourceDir). */
  sources?: readonly ArchiveSource[];
  /** The output capture's accounting, kept in the manifest (a re-run after the workspace is gone reads it there). */
  output?: Manifest['output'];
  uid: string;
  namespace?: string;
  name?: string;
  trigger?: string;
  now?: Date;
}

/**
 * Builds the archive from the workspace files present, verifies every copy, writes the manifest and
 * renames the whole directory into place (replacing an invalid archive there). Returns the manifest.
 */
export async function writeArchive(input: WriteArchiveInput): Promise<Manifest> {
  const loc = input.location;
  await mkdir(loc.parent, { recursive: true, mode: 0o700 });
  const tmp = join(loc.parent, `${tempPrefix(loc)}${randomBytes(6).toString('hex')}`);
  await mkdir(tmp, { mode: 0o700 });
  try {
    const files: SourceFile[] = [];
    for (const { name, parts } of input.sources ?? archiveSources(input.sourceDir)) {
      let mtimeMs = 0;
      try {
        for (const part of parts) mtimeMs = Math.max(mtimeMs, (await stat(part)).mtimeMs);
      } catch (err) {
        if (errnoOf(err) === 'ENOENT' && parts.length === 1) continue;
        throw err;
      }
      const digest = await copyVerified(parts, join(tmp, name));
      files.push({ name, ...digest, modifiedAt: new Date(mtimeMs).toISOString() });
    }
    const manifest = buildManifest({
      uid: input.uid,
      ...(input.namespace !== undefined ? { namespace: input.namespace } : {}),
      ...(input.name !== undefined ? { name: input.name } : {}),
      ...(input.trigger !== undefined ? { trigger: input.trigger } : {}),
      archivedAt: (input.now ?? new Date()).toISOString(),
      sourceDir: input.sourceDir,
      files,
      ...(input.output !== undefined ? { output: input.output } : {}),
    });
    await writeFile(join(tmp, MANIFEST_FILE), `${JSON.stringify(manifest, null, 2)}\n`, { mode: 0o600, flag: 'wx' });
    await fsyncFile(join(tmp, MANIFEST_FILE));
    await fsyncDir(tmp);
    if (await exists(loc.dir)) {
      // Only an archive that failed verification gets here; move it aside so the rename can land.
      await rename(loc.dir, join(loc.parent, `${oldPrefix(loc)}${randomBytes(6).toString('hex')}`));
    }
    await rename(tmp, loc.dir);
    await fsyncDir(loc.parent);
    await removeStaleTemps(loc);
    return manifest;
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }
}

/** Writes the cleanup record into the archive unless an earlier run already did. */
export async function writeRecordOnce(dir: string, record: unknown): Promise<boolean> {
  const path = join(dir, RECORD_FILE);
  if (await exists(path)) return false;
  await writeFileAtomic(path, `${JSON.stringify(record, null, 2)}\n`, 0o600);
  return true;
}
