/**
 * Events as an admin sees them: `kubectl describe agent` lists what the EventRecorder wrote, with
 * repeats folded into one line (x N), and the core/v1 view selects them by involvedObject.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CoreV1Api } from '@kubernetes/client-node';
import { pino } from 'pino';
import { AGENT_KIND, API_VERSION } from '../../src/api/constants.js';
import { closeConnections, shareConnections } from '../../src/kube/client.js';
import { EventRecorder, type EventSubject } from '../../src/kube/events.js';
import { agentClient } from '../../src/kube/resources.js';
import { createTestNamespace, kubeConfig, kubectl } from '../support/cluster.js';

test('kubectl describe agent shows recorded events, repeats aggregated', async (t) => {
  const ns = await createTestNamespace(t, 'kube-events');
  const kc = shareConnections(kubeConfig());
  t.after(() => closeConnections(kc));
  const agent = (await agentClient(kc).create({
    apiVersion: API_VERSION,
    kind: AGENT_KIND,
    metadata: { name: 'reviewer', namespace: ns },
    spec: { prompt: 'p', command: ['true'] },
  })) as EventSubject;
  const recorder = new EventRecorder(kc, {
    logger: pino({ level: 'warn' }),
    reportingController: 'orchestrator.dev/controller',
    reportingInstance: 'controller-test',
  });
  recorder.normal(agent, 'Scheduled', 'Bound to node node-1');
  for (let i = 0; i < 3; i++) recorder.warning(agent, 'LaunchFailed', 'tmux: server exited unexpectedly');
  await recorder.flush();

  const described = await kubectl(['describe', 'agent', 'reviewer', '-n', ns]);
  assert.equal(described.exitCode, 0, described.stderr);
  const lines = described.stdout.slice(described.stdout.indexOf('Events:')).split('\n');
  const scheduled = lines.find((l) => l.includes('Scheduled'));
  const failed = lines.find((l) => l.includes('LaunchFailed'));
  assert.match(scheduled ?? '', /Normal\s+Scheduled\s+.*orchestrator\.dev\/controller\s+Bound to node node-1/);
  assert.match(failed ?? '', /Warning\s+LaunchFailed\s+.*\(x3 over .*\)\s+orchestrator\.dev\/controller\s+tmux: server exited unexpectedly/);
  assert.equal(lines.filter((l) => l.includes('LaunchFailed')).length, 1, 'one line for the series');

  // The same Events through the core/v1 API, selected the way kubectl does it.
  const core = kc.makeApiClient(CoreV1Api);
  const list = await core.listNamespacedEvent({
    namespace: ns,
    fieldSelector: `involvedObject.kind=${AGENT_KIND},involvedObject.name=reviewer,involvedObject.uid=${agent.metadata?.uid}`,
  });
  const byReason = Object.fromEntries(list.items.map((e) => [e.reason ?? '', e] as const));
  assert.deepEqual(Object.keys(byReason).sort(), ['LaunchFailed', 'Scheduled']);
  assert.equal(byReason.LaunchFailed?.series?.count, 3);
  assert.equal(byReason.LaunchFailed?.reportingComponent, 'orchestrator.dev/controller');
  assert.equal(byReason.Scheduled?.involvedObject.apiVersion, API_VERSION);
});
