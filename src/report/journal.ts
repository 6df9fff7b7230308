/**
 * An agent's report journals (reports.jsonl, findings.jsonl): durable appends, each bounded, so an
 * agent that reports without end fills its own journal and nothing more of the node's disk.
 */
import { constants } from 'node:fs';
import { open } from '../sidecar/runtime/boundedFs.js';

/** The most one journal of one agent holds unless the sidecar says otherwise (--report-journal-max-size). */
export const DEFAULT_JOURNAL_MAX_BYTES = 4 * 2 ** 20;

export class JournalFullError extends Error {
  constructor(
    readonly file: string,
    readonly maxBytes: number,
  ) {
    super(`${file} holds its ${maxBytes} byte limit: no more reports of this kind are recorded for this agent`);
    this.name = 'JournalFullError';
  }
}

/** Whether a line still fits (pure): a journal never grows past its limit. */
export function journalHasRoom(currentBytes: number, lineBytes: number, maxBytes: number): boolean {
  return currentBytes + lineBytes <= maxBytes;
}

/**
 * Appends one line with O_APPEND (one write per line, so concurrent writers never interleave) and
 * fsyncs before returning; throws JournalFullError, writing nothing, when the line does not fit.
 * O_NOFOLLOW and the regular-file check keep an agent that replaced the file with a symlink or a
 * FIFO from redirecting or blocking the sidecar's write. One agent's appends are serialised by the
 * caller, so the size checked is the size appended to.
 */
export async function appendToJournal(file: string, line: string, maxBytes: number): Promise<void> {
  const flags = constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW | constants.O_NONBLOCK;
  const handle = await open(file, flags, 0o600);
  try {
    const st = await handle.stat();
    if (!st.isFile()) throw new Error(`${file} is not a regular file`);
    if (!journalHasRoom(st.size, Buffer.byteLength(line), maxBytes)) throw new JournalFullError(file, maxBytes);
    await handle.writeFile(line);
    await handle.datasync();
  } finally {
    await handle.close();
  }
}
