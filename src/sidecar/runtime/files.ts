/** Small filesystem primitives the runtime builds on: atomic writes, hashing, existence. */
import { createHash, randomBytes } from 'node:crypto';
import { constants, createReadStream } from 'node:fs';
import { open, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { bounded } from './boundedFs.js';

/** Errno of a Node fs error, or undefined. */
export function errnoOf(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err ? String(err.code) : undefined;
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

async function existsNow(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if (errnoOf(err) === 'ENOENT' || errnoOf(err) === 'ENOTDIR') return false;
    throw err;
  }
}

/** fsync a directory so a rename or create inside it survives a crash. */
async function fsyncDirNow(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function withFile<T>(path: string, flags: string, mode: number, fn: (fh: FileHandle) => Promise<T>): Promise<T> {
  const fh = await open(path, flags, mode);
  try {
    return await fn(fh);
  } finally {
    await fh.close();
  }
}

/** A sibling temp name: same directory (so rename is atomic), hidden, unique. */
export function tempSibling(path: string): string {
  return join(dirname(path), `.${basename(path)}.tmp-${randomBytes(6).toString('hex')}`);
}

/**
 * Writes `data` to `path` so that readers see either the old content or the whole new one, never a
 * part: temp file (created with `mode`, never wider), fsync, rename, fsync of the directory.
 */
async function writeFileAtomicNow(path: string, data: Buffer | string, mode: number): Promise<void> {
  const tmp = tempSibling(path);
  try {
    await withFile(tmp, 'wx', mode, async (fh) => {
      await fh.writeFile(data);
      await fh.sync();
    });
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  await fsyncDirNow(dirname(path));
}

/** fsync one file's content. */
async function fsyncFileNow(path: string): Promise<void> {
  await withFile(path, 'r', 0, (fh) => fh.sync());
}

export interface FileDigest {
  bytes: number;
  sha256: string;
}

/** Size and SHA-256 of the files' content one after the other (one file: its own), streamed. */
async function digestFileNow(path: string | readonly string[]): Promise<FileDigest> {
  const hash = createHash('sha256');
  let bytes = 0;
  for (const part of typeof path === 'string' ? [path] : path) {
    for await (const chunk of createReadStream(part)) {
      const buf = chunk as Buffer;
      hash.update(buf);
      bytes += buf.length;
    }
  }
  return { bytes, sha256: hash.digest('hex') };
}

/** The most readOptional reads: the node's state files are a few hundred bytes. */
export const STATE_FILE_MAX_BYTES = 1 << 20;

/**
 * Whether an opened state file may be read: 'read', 'gone' (unlinked since it was opened: a cleanup
 * removing another agent's state, or an atomic replace; as absent as ENOENT), or refused, saying why.
 */
export function stateFileVerdict(st: { isFile(): boolean; nlink: number; size: number }, maxBytes: number): 'read' | 'gone' | { refused: string } {
  if (!st.isFile()) return { refused: 'not a regular file' };
  if (st.nlink === 0) return 'gone';
  if (st.nlink !== 1) return { refused: `it has ${st.nlink} links` };
  if (st.size > maxBytes) return { refused: `${st.size} bytes, more than ${maxBytes}` };
  return 'read';
}

/**
 * Reads from a node-state file, defensive whoever could have put something there: never follows a
 * symlink (O_NOFOLLOW), never blocks on a FIFO or device (O_NONBLOCK, then only a regular file with
 * one link is read), refuses one bigger than `maxBytes`. Undefined when it does not exist.
 */
async function withStateFile<T>(path: string, maxBytes: number, read: (fh: FileHandle, size: number) => Promise<T>): Promise<T | undefined> {
  let fh: FileHandle;
  try {
    fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return undefined;
    if (errnoOf(err) === 'ELOOP') throw new Error(`refusing to read ${path}: it is a symbolic link`);
    throw err;
  }
  try {
    const st = await fh.stat();
    const verdict = stateFileVerdict(st, maxBytes);
    if (verdict === 'gone') return undefined;
    if (verdict !== 'read') throw new Error(`refusing to read ${path}: ${verdict.refused}`);
    return await read(fh, st.size);
  } finally {
    await fh.close();
  }
}

/**
 * The first `maxBytes` of a node-state file another process writes in place (exec-status, which the
 * launcher opens and the exec step writes through its descriptor): what is there now, without
 * readOptional's refusal of a file that grows while it is read, and when it was last written (stat
 * after the read, so no earlier than what was read).
 */
function readHeadNow(path: string, maxBytes: number): Promise<{ head: Buffer; mtimeMs: number } | undefined> {
  return withStateFile(path, Number.POSITIVE_INFINITY, async (fh) => {
    const buf = Buffer.alloc(maxBytes);
    let n = 0;
    while (n < maxBytes) {
      const { bytesRead } = await fh.read(buf, n, maxBytes - n, n);
      if (bytesRead === 0) break;
      n += bytesRead;
    }
    return { head: buf.subarray(0, n), mtimeMs: (await fh.stat()).mtimeMs };
  });
}

/**
 * Reads a small node-state file whole (see withStateFile), or undefined when it does not exist;
 * never more than `maxBytes` (a /dev/zero cannot grow the heap).
 */
function readOptionalNow(path: string, maxBytes: number): Promise<Buffer | undefined> {
  return withStateFile(path, maxBytes, async (fh, size) => {
    // One byte more than its size: state files are replaced, never grown in place.
    const buf = Buffer.alloc(size + 1);
    let n = 0;
    for (;;) {
      const { bytesRead } = await fh.read(buf, n, buf.length - n, n);
      if (bytesRead === 0) break;
      n += bytesRead;
      if (n === buf.length) throw new Error(`refusing to read ${path}: it grew while being read`);
    }
    return buf.subarray(0, n);
  });
}

// Each of the above as one bounded file operation (boundedFs.ts): what it does on the open file
// (read, write, fsync) can hang as well as the open.
export const exists = (path: string): Promise<boolean> => bounded('stat', path, () => existsNow(path));
export const fsyncDir = (dir: string): Promise<void> => bounded('fsync', dir, () => fsyncDirNow(dir));
export const writeFileAtomic = (path: string, data: Buffer | string, mode = 0o600): Promise<void> => bounded('write', path, () => writeFileAtomicNow(path, data, mode));
export const fsyncFile = (path: string): Promise<void> => bounded('fsync', path, () => fsyncFileNow(path));
export const digestFile = (path: string | readonly string[]): Promise<FileDigest> => bounded('digest', typeof path === 'string' ? path : path.join(' + '), () => digestFileNow(path));
export const readOptional = (path: string, maxBytes = STATE_FILE_MAX_BYTES): Promise<Buffer | undefined> => bounded('read', path, () => readOptionalNow(path, maxBytes));
export const readHead = (path: string, maxBytes: number): Promise<{ head: Buffer; mtimeMs: number } | undefined> => bounded('read', path, () => readHeadNow(path, maxBytes));
