/**
 * The node's file operations, each bounded in time. A stuck filesystem (a hung NFS or FUSE mount, a
 * disk that stopped answering), a FIFO opened without O_NONBLOCK, or a /proc read of a process stuck
 * in the kernel blocks a libuv worker for as long as it hangs; unbounded, the launch or cleanup
 * awaiting it hangs too and the node quietly stops working. Here an operation that outlasts the
 * timeout rejects with an error naming the operation and its path (a WaitTimeoutError), is counted
 * in agent_operator_file_operation_timeouts_total{operation}, and the reconcile that awaited it fails
 * and is retried with the work queue's backoff. The blocked worker itself cannot be freed (the
 * kernel call is still in progress): a file handle that arrives late is closed. The same signatures
 * as node:fs/promises, so a module switches by its import line.
 */
import * as fsp from 'node:fs/promises';
import { Counter, type Registry } from 'prom-client';
import { WaitTimeoutError, withTimeout } from '../../kube/backoff.js';

/** Long enough for a busy disk's fsync or a workspace's recursive removal, short against a liveness probe. */
export const DEFAULT_FILE_OPERATION_TIMEOUT_MS = 30_000;

let timeoutMs = DEFAULT_FILE_OPERATION_TIMEOUT_MS;

/** Sets the bound of every file operation in this process (the sidecar's --file-operation-timeout-seconds). */
export function setFileOperationTimeout(ms: number): void {
  if (!Number.isInteger(ms) || ms <= 0) throw new Error(`file operation timeout: expected a positive number of milliseconds, got ${ms}`);
  timeoutMs = ms;
}

const TIMEOUTS_METRIC = 'agent_operator_file_operation_timeouts_total';
const timeouts = new Counter({
  name: TIMEOUTS_METRIC,
  help: 'File operations on the node that did not finish within --file-operation-timeout-seconds, by operation',
  labelNames: ['operation'],
  registers: [],
});

/** Adds the timeout counter to a component's registry (once per registry). */
export function registerFileOperationMetrics(registry: Registry): void {
  if (!registry.getSingleMetric(TIMEOUTS_METRIC)) registry.registerMetric(timeouts);
}

/** A file operation that did not finish in time: a fault of the node, not of the agent, so worth a retry. */
export class FileOperationTimeoutError extends WaitTimeoutError {
  constructor(
    readonly operation: string,
    readonly path: string,
    ms: number,
  ) {
    super(`${operation} of ${path}`, ms);
    this.name = 'FileOperationTimeoutError';
  }
}

/**
 * Runs one file operation (or a short sequence on one file, as a unit) within the timeout.
 * `late` receives a result that arrives after the timeout, to release it.
 */
export async function bounded<T>(operation: string, path: string, fn: () => Promise<T>, late?: (value: T) => unknown): Promise<T> {
  const op = fn();
  const ms = timeoutMs;
  // Settled as a value, so the only rejection withTimeout can give is its own timeout.
  const settled = op.then(
    (value) => ({ value }),
    (error: unknown) => ({ error }),
  );
  let outcome: { value: T } | { error: unknown };
  try {
    outcome = await withTimeout(settled, ms, operation);
  } catch {
    timeouts.inc({ operation });
    if (late) void op.then(late).catch(() => undefined);
    throw new FileOperationTimeoutError(operation, path, ms);
  }
  if ('error' in outcome) throw outcome.error;
  return outcome.value;
}

/** `fn` bounded, named by its first argument (the path), or its first two (source and destination). */
function bound<F extends (...args: never[]) => Promise<unknown>>(operation: string, fn: F, paths: 1 | 2 = 1): F {
  const call = fn as unknown as (...args: unknown[]) => Promise<unknown>;
  return ((...args: unknown[]) => bounded(operation, paths === 1 ? String(args[0]) : `${String(args[0])} to ${String(args[1])}`, () => call(...args))) as unknown as F;
}

export const open = ((...args: Parameters<typeof fsp.open>) =>
  bounded(
    'open',
    String(args[0]),
    () => fsp.open(...args),
    (fh) => fh.close(),
  )) as typeof fsp.open;
export const stat = bound('stat', fsp.stat);
export const lstat = bound('lstat', fsp.lstat);
export const readdir = bound('readdir', fsp.readdir);
export const readFile = bound('readFile', fsp.readFile);
export const readlink = bound('readlink', fsp.readlink);
export const realpath = bound('realpath', fsp.realpath);
export const writeFile = bound('writeFile', fsp.writeFile);
export const mkdir = bound('mkdir', fsp.mkdir);
export const chmod = bound('chmod', fsp.chmod);
export const chown = bound('chown', fsp.chown);
export const rm = bound('rm', fsp.rm);
export const rmdir = bound('rmdir', fsp.rmdir);
export const unlink = bound('unlink', fsp.unlink);
export const rename = bound('rename', fsp.rename, 2);
export const copyFile = bound('copyFile', fsp.copyFile, 2);
