/**
 * The agent's output capture, bounded: what tmux's pipe-pane runs (outside the sandbox, as the
 * node's user, so the agent can neither reach nor stop it) keeps the first half of the cap in
 * output.log (the head) and the last bytes in a ring of `segments` slot files (the tail), so the
 * disk never holds more than the cap of one agent's output, whatever it prints.
 *
 * The ring: each segment is written by `head -c` into output.tail.new; once full it is renamed over
 * the oldest slot (the segment that falls out is the only thing dropped), and output.tail.index
 * counts the segments completed. Everything the sidecar needs to account for what was seen, kept
 * and dropped is then in the files' names and sizes (captureAccounting); no counter is kept.
 * GNU `head -c N` reads no more than it writes, so nothing is lost between head and tail; `stdbuf -o0`
 * makes it write what it reads at once (its stdio would hold a file's output until 4 KiB or its end,
 * hiding the output, and its time, from anyone watching the node).
 *
 * The capture shell holds output.log open (fd 9, inherited by its children) until it ends, so
 * "no process holds output.log" (cleanup's flush) still means the capture has ended.
 */
import { constants } from 'node:fs';
import { open, stat } from './boundedFs.js';
import { join } from 'node:path';
import { errnoOf, readOptional } from './files.js';
import { shellQuote } from './tmux.js';

export const OUTPUT_FILE = 'output.log';
export const TAIL_NEW_FILE = 'output.tail.new';
export const TAIL_INDEX_FILE = 'output.tail.index';
/** The archived tail: the ring's segments, oldest first. */
export const ARCHIVED_TAIL_FILE = 'output-tail.log';
const slotFile = (slot: number) => `output.tail.${slot}`;

/** The cap when neither the Agent nor the node says (the sidecar's --output-max-size default). */
export const DEFAULT_OUTPUT_MAX_BYTES = 10 * 2 ** 20;
/** The least cap that still leaves every segment a useful size. */
export const MIN_OUTPUT_BYTES = 4096;
const SEGMENTS = 4;

export interface CaptureLimits {
  /** The cap: head plus every slot of the ring. */
  maxBytes: number;
  headBytes: number;
  segmentBytes: number;
  segments: number;
}

/**
 * Splits a cap into the head and the ring (pure): half each. The ring holds SEGMENTS slots and the
 * segment being written, which replaces the oldest slot only once full, so SEGMENTS + 1 segments fit
 * its half; the tail kept is then at least SEGMENTS - 1 of them.
 */
export function captureLimits(maxBytes: number): CaptureLimits {
  if (!Number.isSafeInteger(maxBytes) || maxBytes < MIN_OUTPUT_BYTES) {
    throw new Error(`output cap must be a whole number of bytes, at least ${MIN_OUTPUT_BYTES} (got ${maxBytes})`);
  }
  const headBytes = Math.ceil(maxBytes / 2);
  const segmentBytes = Math.floor((maxBytes - headBytes) / (SEGMENTS + 1));
  return { maxBytes, headBytes, segmentBytes, segments: SEGMENTS };
}

/** The cap an agent gets (pure): its spec's, else the node's default, never above the node's limit. */
export function outputCapFor(requested: number | undefined, node: { defaultBytes: number; limitBytes: number }): { maxBytes: number; clamped: boolean } {
  const wanted = requested ?? node.defaultBytes;
  return wanted > node.limitBytes ? { maxBytes: node.limitBytes, clamped: true } : { maxBytes: Math.max(wanted, MIN_OUTPUT_BYTES), clamped: false };
}

/** The shell program pipe-pane runs with the pane's output on its stdin (pure). */
export function captureScript(dir: string, l: CaptureLimits): string {
  const q = (name: string) => shellQuote(join(dir, name));
  return [
    'umask 077',
    `exec 9>>${q(OUTPUT_FILE)} || exit 1`,
    `stdbuf -o0 head -c ${l.headBytes} >&9 || exit 0`,
    'i=0',
    'while :; do',
    `  stdbuf -o0 head -c ${l.segmentBytes} >${q(TAIL_NEW_FILE)} || exit 0`,
    `  [ -s ${q(TAIL_NEW_FILE)} ] || exit 0`,
    `  mv -f ${q(TAIL_NEW_FILE)} ${shellQuote(join(dir, 'output.tail.'))}$((i % ${l.segments})) || exit 0`,
    '  i=$((i + 1))',
    `  echo "$i" >${q(TAIL_INDEX_FILE)}`,
    'done',
  ].join('\n');
}

/** What the capture left on disk (sizes; undefined for a file that is not there). */
export interface CaptureFiles {
  headBytes: number;
  /** Segments completed (output.tail.index). */
  completed: number;
  /** Size of each slot, by slot number. */
  slotBytes: readonly (number | undefined)[];
  /** The segment being written, if any. */
  newBytes: number;
}

export interface CaptureAccounting {
  /** Everything the agent printed that the capture read. */
  totalBytes: number;
  /** Bytes neither in the head nor in the tail. */
  droppedBytes: number;
  truncated: boolean;
  /** The tail's files (names in the workspace), oldest first; empty while output fits the head. */
  tail: string[];
}

/**
 * What was seen, kept and dropped (pure). Segments 0..completed-1 went through the slots in turn:
 * those still there are the last `segments` of them; each one overwritten was full (a segment is
 * only followed by another once full), so it counts segmentBytes.
 */
export function captureAccounting(l: CaptureLimits, f: CaptureFiles): CaptureAccounting {
  const first = Math.max(0, f.completed - l.segments);
  const tail: string[] = [];
  let kept = f.headBytes;
  for (let seg = first; seg < f.completed; seg++) {
    const bytes = f.slotBytes[seg % l.segments];
    if (!bytes) continue;
    tail.push(slotFile(seg % l.segments));
    kept += bytes;
  }
  if (f.newBytes > 0) {
    tail.push(TAIL_NEW_FILE);
    kept += f.newBytes;
  }
  const droppedBytes = first * l.segmentBytes;
  return { totalBytes: kept + droppedBytes, droppedBytes, truncated: droppedBytes > 0, tail };
}

async function sizeOf(path: string): Promise<number | undefined> {
  try {
    const st = await stat(path);
    return st.isFile() ? st.size : undefined;
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return undefined;
    throw err;
  }
}

/** Reads the capture's files in `dir` (the node's own; the agent cannot write there). */
export async function readCaptureFiles(dir: string, l: CaptureLimits): Promise<CaptureFiles> {
  const index = await readOptional(join(dir, TAIL_INDEX_FILE), 64);
  const completed = index ? Number.parseInt(index.toString('utf8').trim(), 10) : 0;
  const slots = await Promise.all(Array.from({ length: l.segments }, (_, s) => sizeOf(join(dir, slotFile(s)))));
  return {
    headBytes: (await sizeOf(join(dir, OUTPUT_FILE))) ?? 0,
    completed: Number.isSafeInteger(completed) && completed >= 0 ? completed : 0,
    slotBytes: slots,
    newBytes: (await sizeOf(join(dir, TAIL_NEW_FILE))) ?? 0,
  };
}

/** Where an agent's output is kept, in order (the head, then the tail oldest first); `gap`: bytes were dropped between them. */
export interface KeptOutput {
  parts: string[];
  gap: boolean;
}

/** A workspace's output as the capture keeps it; without recorded limits (an older launch), output.log alone. */
export async function workspaceOutput(dir: string, l: CaptureLimits | undefined): Promise<KeptOutput> {
  if (!l) return { parts: [join(dir, OUTPUT_FILE)], gap: false };
  const kept = captureAccounting(l, await readCaptureFiles(dir, l));
  return { parts: [OUTPUT_FILE, ...kept.tail].map((n) => join(dir, n)), gap: kept.truncated };
}

/** An archive's output: output.log, then output-tail.log; `truncated` as its manifest records. */
export function archiveOutput(dir: string, truncated: boolean): KeptOutput {
  return { parts: [join(dir, OUTPUT_FILE), join(dir, ARCHIVED_TAIL_FILE)], gap: truncated };
}

/**
 * The end of the kept output (at most maxBytes), or undefined when its head does not exist.
 * Past a gap (bytes dropped between head and tail) the end is the tail's alone, cut at its start.
 */
export async function readOutputEnd(kept: KeptOutput, maxBytes: number): Promise<{ text: string; cut: boolean } | undefined> {
  const [head, ...tail] = kept.parts;
  if (head === undefined || (await readFileEnd(head, 0)) === undefined) return undefined;
  const parts = kept.gap ? tail : kept.parts;
  const chunks: Buffer[] = [];
  let budget = maxBytes;
  let cut = kept.gap;
  for (let i = parts.length - 1; i >= 0 && budget > 0; i--) {
    // A part missing is one the ring just moved on from.
    const end = await readFileEnd(parts[i]!, budget);
    if (!end) continue;
    chunks.unshift(end.bytes);
    budget -= end.bytes.length;
    if (end.cut || (budget <= 0 && i > 0)) cut = true;
  }
  return { text: Buffer.concat(chunks).toString('utf8'), cut };
}

/** The last `max` bytes of a regular file, or undefined when there is none. */
async function readFileEnd(path: string, max: number): Promise<{ bytes: Buffer; cut: boolean } | undefined> {
  let handle;
  try {
    // No symlink, no FIFO: an agent must not make its node read something else for it.
    handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    return undefined;
  }
  try {
    const st = await handle.stat();
    if (!st.isFile()) return undefined;
    const start = Math.max(0, st.size - max);
    const buf = Buffer.alloc(st.size - start);
    const { bytesRead } = await handle.read(buf, 0, buf.length, start);
    return { bytes: buf.subarray(0, bytesRead), cut: start > 0 };
  } finally {
    await handle.close();
  }
}

/**
 * The latest output of an agent: output.log while the head fills, then the segment being written.
 * Size is what is on disk now; mtime is the last write to either.
 */
export async function statOutput(dir: string): Promise<{ bytes: number; mtimeMs: number } | undefined> {
  const [head, tail] = await Promise.all(
    [OUTPUT_FILE, TAIL_NEW_FILE].map((n) =>
      stat(join(dir, n)).catch((err: unknown) => {
        if (errnoOf(err) === 'ENOENT') return undefined;
        throw err;
      }),
    ),
  );
  if (!head) return undefined;
  return { bytes: head.size + (tail?.size ?? 0), mtimeMs: Math.max(head.mtimeMs, tail && tail.size > 0 ? tail.mtimeMs : 0) };
}
