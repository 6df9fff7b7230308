/**
 * Bounded file operations against a real hang: a FIFO with no writer, opened without O_NONBLOCK,
 * blocks the open in a libuv worker until a writer comes, as a stuck filesystem would.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { constants } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { Registry } from 'prom-client';
import {
  bounded,
  DEFAULT_FILE_OPERATION_TIMEOUT_MS,
  FileOperationTimeoutError,
  open,
  readFile,
  registerFileOperationMetrics,
  setFileOperationTimeout,
  stat,
} from '../../src/sidecar/runtime/boundedFs.js';
import { readOptional } from '../../src/sidecar/runtime/files.js';
import { WaitTimeoutError, withTimeout } from '../../src/kube/backoff.js';
import { waitFor } from '../../src/sidecar/runtime/wait.js';

const TIMEOUT_MS = 300;

async function timeoutsCounted(registry: Registry, operation: string): Promise<number> {
  const m = (await registry.getSingleMetric('agent_operator_file_operation_timeouts_total')!.get()).values.find((v) => v.labels.operation === operation);
  return m?.value ?? 0;
}

/** File descriptors of this process open on `path`. */
async function fdsOn(path: string): Promise<number> {
  let n = 0;
  for (const fd of await fsp.readdir('/proc/self/fd')) if ((await fsp.readlink(`/proc/self/fd/${fd}`).catch(() => '')) === path) n++;
  return n;
}

async function fifoDir(t: TestContext): Promise<{ fifo: string; release: () => Promise<void> }> {
  setFileOperationTimeout(TIMEOUT_MS);
  const dir = await fsp.mkdtemp(join(tmpdir(), 'ao-boundedfs-'));
  const fifo = join(dir, 'fifo');
  execFileSync('mkfifo', [fifo], { timeout: 5_000 });
  // A writer frees every open blocked on the FIFO (each then reads EOF); held while the FIFO goes, so
  // no open queued behind them blocks anew. Also on failure: a blocked worker keeps the test process alive.
  const release = async () => {
    const w = await fsp.open(fifo, constants.O_WRONLY | constants.O_NONBLOCK).catch(() => undefined);
    await fsp.rm(dir, { recursive: true, force: true });
    await w?.close();
  };
  t.after(async () => {
    await release();
    setFileOperationTimeout(DEFAULT_FILE_OPERATION_TIMEOUT_MS);
  });
  return { fifo, release };
}

describe('bounded file operations', () => {
  it('an open that hangs rejects after the timeout, naming the operation and the path; it is counted, and its late handle closed', async (t) => {
    const { fifo, release } = await fifoDir(t);
    const registry = new Registry();
    registerFileOperationMetrics(registry);
    registerFileOperationMetrics(registry); // once per registry, however often asked
    const before = await timeoutsCounted(registry, 'open');
    const t0 = Date.now();
    const err = await open(fifo, 'r').then(
      () => assert.fail('the open of a FIFO with no writer returned'),
      (e: unknown) => e,
    );
    const took = Date.now() - t0;
    assert.ok(err instanceof FileOperationTimeoutError, String(err));
    assert.equal(err.message, `timed out after ${TIMEOUT_MS} ms waiting for open of ${fifo}`);
    assert.equal(err.operation, 'open');
    assert.equal(err.path, fifo);
    assert.ok(took >= TIMEOUT_MS - 5 && took < TIMEOUT_MS + 2_000, `took ${took} ms`);
    assert.equal(await timeoutsCounted(registry, 'open'), before + 1);

    // A writer arrives: the blocked open completes in its worker, and the handle nobody awaits is closed.
    const w = await fsp.open(fifo, constants.O_WRONLY | constants.O_NONBLOCK);
    await waitFor(async () => ((await fdsOn(fifo)) === 1 ? true : undefined), { timeoutMs: 5_000, what: 'the late reader handle to be closed' });
    await w.close();
    await release();
  });

  it('a read of a FIFO through readFile (which opens blocking) times out; readOptional refuses it at once', async (t) => {
    const { fifo } = await fifoDir(t);
    await assert.rejects(readFile(fifo), (e: unknown) => e instanceof FileOperationTimeoutError && /waiting for readFile of .*fifo$/.test(e.message));
    const t0 = Date.now();
    await assert.rejects(readOptional(fifo), /not a regular file/);
    assert.ok(Date.now() - t0 < TIMEOUT_MS, 'readOptional waited');
  });

  it("passes results and the operation's own errors through, uncounted, and never takes an inner wait's timeout for its own", async () => {
    setFileOperationTimeout(TIMEOUT_MS);
    try {
      const registry = new Registry();
      registerFileOperationMetrics(registry);
      const before = await timeoutsCounted(registry, 'inner');
      assert.ok((await stat(tmpdir())).isDirectory());
      await assert.rejects(stat(join(tmpdir(), 'ao-no-such-file')), { code: 'ENOENT' });
      const inner = bounded('inner', '/x', () => withTimeout(new Promise<never>(() => undefined), 10, 'something else'));
      await assert.rejects(inner, (e: unknown) => e instanceof WaitTimeoutError && !(e instanceof FileOperationTimeoutError) && /something else/.test(e.message));
      assert.equal(await timeoutsCounted(registry, 'inner'), before);
      assert.equal(await bounded('inner', '/x', async () => 7), 7);
    } finally {
      setFileOperationTimeout(DEFAULT_FILE_OPERATION_TIMEOUT_MS);
    }
  });

  it('refuses a timeout that is not a positive whole number of ms', () => {
    for (const bad of [0, -1, 1.5, Number.NaN]) assert.throws(() => setFileOperationTimeout(bad), /expected a positive number of milliseconds/);
  });
});
