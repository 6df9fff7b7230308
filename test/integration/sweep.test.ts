/**
 * The sidecar's safety net, end to end: a session no Agent accounts for (left by a crash, or
 * started by hand on the node's socket) is stopped, archived and removed by the sweeper, and the
 * node says so in an Event on its AgentNode.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { agentNodeClient } from '../../src/kube/resources.js';
import { launch } from '../../src/sidecar/runtime/launch.js';
import { REPORTING_CONTROLLER as SIDECAR_EVENTS } from '../../src/sidecar/sidecar.js';
import { kubeConfig, waitFor } from '../support/cluster.js';
import { archiveDirOf, assertArchive, assertNodeClean, useStack } from '../support/stack.js';
import { eventsAbout } from '../support/telemetry.js';
import { setupAgentCgroups } from '../../src/sidecar/runtime/cgroup.js';
import { nodeSandbox } from '../../src/sidecar/runtime/sandbox.js';
import { testUidRange } from '../support/sandbox.js';

describe('sweeper', () => {
  const stack = useStack('sweep', { nodes: 1, sweepIntervalSeconds: 1, sweepMinAgeSeconds: 1 });

  it('an orphan session on the node: stopped, archived, removed, and an OrphanCleanedUp Event on the AgentNode', async () => {
    const node = stack().nodes[0]!;
    const uid = randomUUID();
    const name = 'left-behind';
    const started = await launch({
      root: node.root,
      uid,
      namespace: 'gone',
      name,
      command: ['sh', '-c', 'echo orphan-output; exec sleep 300'],
      env: {},
      prompt: 'nobody asked for this\n',
      binDir: join(node.root, 'bin'),
      // The node's own sandbox and cgroup, as its sidecar set them up.
      sandbox: await nodeSandbox('bwrap', testUidRange(), [], await setupAgentCgroups(node.agentsCgroup)),
      logger: pino({ level: 'silent' }),
    });
    assert.equal(started.started, true);
    const agentNode = await agentNodeClient(kubeConfig()).get({ name: node.name });
    const event = await waitFor(async () => (await eventsAbout('default', agentNode.metadata!.uid!)).find((e) => e.reason === 'OrphanCleanedUp' && e.note?.includes(uid)), {
      timeoutMs: 30_000,
      what: `an OrphanCleanedUp Event for ${uid} on AgentNode ${node.name}`,
    });
    assert.equal(event.type, 'Warning');
    assert.equal(event.reportingController, SIDECAR_EVENTS);
    const dir = archiveDirOf(stack(), node.name, 'gone', name, uid);
    assert.match(event.note ?? '', new RegExp(`[1-9]\\d* process\\(es\\) stopped, logs archived to ${dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
    await assertArchive(dir);
    assert.match(await readFile(join(dir, 'output.log'), 'utf8'), /orphan-output/);
    await assertNodeClean(stack(), uid);
  });
});
