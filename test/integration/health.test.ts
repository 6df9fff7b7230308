/**
 * The sidecar's liveness on the real stack: its relist made to stall for real (a FIFO with no writer
 * planted at its stall point, runtime/stallPoint.ts, so the open blocks a libuv worker as a hung
 * filesystem would), /healthz turns 503 with the figures, the launches and cleanups due meanwhile
 * fail their file operations by timeout and are retried with backoff instead of hanging or being
 * recorded as done, and once the FIFO is released the node carries on and /healthz recovers.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { constants } from 'node:fs';
import { open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { agentNodeClient } from '../../src/kube/resources.js';
import { createTestNamespace, kubeConfig, waitFor } from '../support/cluster.js';
import { useGates } from '../support/gate.js';
import { assertNothingLeft, createAgent, useStack, waitForAgent } from '../support/stack.js';
import { metricValue, scrape } from '../support/telemetry.js';

const THRESHOLD_SECONDS = 4;
const FILE_TIMEOUT_SECONDS = 1;

async function healthz(url: string): Promise<{ status: number; body: string }> {
  const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(5000) });
  return { status: res.status, body: await res.text() };
}

describe('sidecar liveness: /healthz fails while the relist makes no progress, and recovers', () => {
  const stack = useStack('health', { nodes: 1, stallPoints: true, healthStallThresholdSeconds: THRESHOLD_SECONDS, fileOperationTimeoutSeconds: FILE_TIMEOUT_SECONDS });
  const gates = useGates(stack);

  it('a stalled relist: 503 with the message; launch and cleanup retried meanwhile; all well once released', async (t) => {
    const ns = await createTestNamespace(t, 'health');
    const node = stack().nodes[0]!;
    const running = (name: string) => waitForAgent(ns, name, (a) => a.status?.phase === 'Running' && !!a.status.startTime, 'to be Running', 90_000);
    assert.deepEqual(await healthz(node.healthUrl), { status: 200, body: 'ok' });

    await createAgent(ns, 'busy', gates().spec('exit 0', { nodeName: node.name }));
    const busy = await running('busy');
    await gates().pid('busy');
    // A pass completed while busy runs: the stall below is judged from that pass (a launch is quicker
    // than the first relist tick, so without this the message would say no pass ever completed).
    const runningSince = Date.now();
    await waitFor(async () => (metricValue(await scrape(node.metricsUrl), 'agent_operator_relist_last_completed_timestamp_seconds') ?? 0) * 1000 >= runningSince - 1000, {
      timeoutMs: 30_000,
      what: 'a relist pass while busy runs',
    });

    // The stall: every relist pass now opens this FIFO, blocking, and times out.
    const fifo = join(node.stallDir!, 'relist');
    execFileSync('mkfifo', [fifo], { timeout: 5_000 });
    let released = false;
    const release = async () => {
      if (released) return;
      released = true;
      // A writer frees every open blocked on it; held while the FIFO goes, so no open queued behind blocks anew.
      const w = await open(fifo, constants.O_WRONLY | constants.O_NONBLOCK).catch(() => undefined);
      await rm(fifo, { force: true });
      await w?.close();
    };
    t.after(release);
    const planted = Date.now();
    const failing = await waitFor(
      async () => {
        const r = await healthz(node.healthUrl);
        return r.status === 503 ? r : undefined;
      },
      { timeoutMs: 30_000, what: '/healthz to fail' },
    );
    const after = (Date.now() - planted) / 1000;
    assert.ok(after >= THRESHOLD_SECONDS - 1, `/healthz failed ${after}s after the stall began, before the ${THRESHOLD_SECONDS}s threshold`);
    assert.match(
      failing.body,
      new RegExp(
        `^\\[\\+\\]ping ok\\n\\[-\\]progress failed: relist last completed \\d+s ago; threshold ${THRESHOLD_SECONDS}s; \\d+ agent\\(s\\) or queued key\\(s\\) waiting; .*` +
          `last error: timed out after ${FILE_TIMEOUT_SECONDS * 1000} ms waiting for open of ${fifo.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\nhealthz check failed\\n$`,
      ),
    );

    // The heartbeat goes on but says the node is not Ready, with the same reason (as a kubelet whose PLEG is unhealthy).
    const nodes = agentNodeClient(kubeConfig());
    const readyOf = async () => (await nodes.get({ name: node.name })).status?.conditions?.find((c) => c.type === 'Ready');
    const notReady = await waitFor(async () => ((await readyOf())?.status === 'False' ? await readyOf() : undefined), { timeoutMs: 30_000, what: 'the AgentNode to say it is not Ready' });
    assert.equal(notReady?.reason, 'SidecarStalled');
    assert.match(notReady?.message ?? '', /^relist last completed \d+s ago; threshold /);

    // Work due during the stall: busy ends (its cleanup), late arrives (its launch). Their reconciles
    // fail by timeout and are retried; none hangs, none is recorded as done or failed.
    const samples0 = await scrape(node.metricsUrl);
    const errors0 = metricValue(samples0, 'controller_runtime_reconcile_errors_total', { controller: 'agent-node' }) ?? 0;
    await gates().open('busy');
    await createAgent(ns, 'late', gates().spec('exit 0', { nodeName: node.name }));
    const stalled = await waitFor(
      async () => {
        const s = await scrape(node.metricsUrl);
        return (metricValue(s, 'controller_runtime_reconcile_errors_total', { controller: 'agent-node' }) ?? 0) > errors0 ? s : undefined;
      },
      { timeoutMs: 30_000, what: 'a reconcile to fail during the stall' },
    );
    assert.ok((metricValue(stalled, 'agent_operator_file_operation_timeouts_total', { operation: 'open' }) ?? 0) >= 1, 'no timed-out open counted');
    assert.equal((await healthz(node.healthUrl)).status, 503, 'healthy while still stalled');

    await release();
    const recovered = Date.now();
    await waitFor(async () => (await healthz(node.healthUrl)).status === 200, { timeoutMs: 30_000, what: '/healthz to recover' });
    const lastPass = metricValue(await scrape(node.metricsUrl), 'agent_operator_relist_last_completed_timestamp_seconds')!;
    assert.ok(lastPass * 1000 >= recovered - 1000, `last relist pass at ${lastPass}, before the release`);

    await waitFor(async () => (await readyOf())?.status === 'True', { timeoutMs: 30_000, what: 'the AgentNode to be Ready again' });
    const late = await running('late');
    await gates().open('late');
    const done = await gates().assertFinishedOnce([busy, late], 'Completed');
    for (const a of done) {
      assert.deepEqual(a.status?.cleanup?.errors ?? [], [], `${a.metadata?.name}: a timed-out step was recorded rather than retried`);
      assert.equal(a.status?.reason, 'Exited');
      await assertNothingLeft(stack(), a);
    }
  });
});
