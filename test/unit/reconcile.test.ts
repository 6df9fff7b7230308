import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Agent } from '../../src/api/agent.js';
import type { Condition } from '../../src/api/fields.js';
import { FINALIZER, NODE_LABEL } from '../../src/api/constants.js';
import type { NodeView } from '../../src/controller/nodes.js';
import { pickControllerStatus, planAgent, type Observed, type Plan } from '../../src/controller/reconcile.js';
import { diffStatus } from '../../src/kube/mergePatch.js';
import { testAgent, type AgentParts } from '../support/agents.js';
import { at, T0 } from '../support/time.js';

/** The controller sees Agents it has already given its finalizer, unless a case says otherwise. */
const agent = (over: AgentParts = {}): Agent => testAgent({ ...over, meta: { finalizers: [FINALIZER], ...over.meta } });

const node = (name: string, over: Partial<NodeView> = {}): NodeView => ({
  name,
  labels: {},
  ready: true,
  unschedulable: false,
  capacity: 2,
  ...over,
});

function observe(a: Agent, over: Partial<Observed> = {}): Plan {
  return planAgent({
    agent: a,
    nodes: new Map([
      ['node-1', node('node-1')],
      ['node-2', node('node-2')],
    ]),
    used: new Map(),
    now: T0 + 100_000,
    config: { nodeLostGraceMs: 60_000, unschedulableRetryMs: 15_000, launchTimeoutMs: 60_000 },
    ...over,
  });
}

const bound = (status: Agent['status'] = {}): Agent['status'] => ({ nodeName: 'node-1', phase: 'Running', ...status });
const boundMeta = { labels: { [NODE_LABEL]: 'node-1' } };

describe('planAgent', () => {
  const cases: { name: string; agent: Agent; over?: Partial<Observed>; expect: (p: Plan) => void }[] = [
    {
      name: 'new agent: finalizer added and bound to the least loaded node',
      agent: agent({ meta: { finalizers: [] } }),
      over: { used: new Map([['node-1', 1]]) },
      expect: (p) => {
        assert.equal(p.addFinalizer, true);
        assert.equal(p.bindTo, 'node-2');
        assert.equal(p.status.nodeName, 'node-2');
        assert.equal(p.status.phase, 'Scheduled');
        assert.equal(p.status.conditions?.find((c) => c.type === 'Scheduled')?.status, 'True');
        assert.deepEqual(
          p.events.map((e) => e.reason),
          ['Scheduled'],
        );
      },
    },
    {
      name: 'no node fits: Pending with a reason naming why, retried',
      agent: agent({ spec: { nodeSelector: { gpu: 'yes' } } }),
      over: {
        nodes: new Map([
          ['node-1', node('node-1', { ready: false })],
          ['node-2', node('node-2')],
        ]),
      },
      expect: (p) => {
        assert.equal(p.status.phase, 'Pending');
        assert.equal(p.status.reason, 'Unschedulable');
        assert.equal(p.status.message, "0/2 nodes are available: 1 didn't match nodeSelector, 1 not ready");
        assert.equal(p.requeueAfterMs, 15_000);
        assert.equal(p.status.nodeName, undefined);
      },
    },
    {
      name: 'invalid spec: Failed with the field named, no finalizer, no binding',
      agent: agent({ spec: { workingDir: 'relative' }, meta: { finalizers: [] } }),
      expect: (p) => {
        assert.equal(p.status.phase, 'Failed');
        assert.equal(p.status.reason, 'InvalidSpec');
        assert.match(p.status.message ?? '', /spec\.workingDir/);
        assert.equal(p.addFinalizer, false);
        assert.equal(p.bindTo, undefined);
        assert.equal(p.events[0]?.type, 'Warning');
      },
    },
    {
      name: 'session started: Running',
      agent: agent({ status: bound({ phase: 'Scheduled', startTime: at(90), sessionName: 'agent-1111' }), meta: boundMeta }),
      expect: (p) => {
        assert.equal(p.status.phase, 'Running');
        assert.equal(p.status.conditions?.find((c) => c.type === 'Running')?.status, 'True');
      },
    },
    {
      name: 'reported working: Working with the agent message',
      agent: agent({ status: bound({ startTime: at(90), reportedState: 'working', reportedMessage: 'halfway' }), meta: boundMeta }),
      expect: (p) => {
        assert.equal(p.status.phase, 'Working');
        assert.equal(p.status.message, 'halfway');
      },
    },
    {
      name: 'reported completed: Completed, Complete condition, completionTime',
      agent: agent({ status: bound({ startTime: at(90), reportedState: 'completed' }), meta: boundMeta }),
      expect: (p) => {
        assert.equal(p.status.phase, 'Completed');
        assert.equal(p.status.completionTime, at(100));
        assert.equal(p.status.conditions?.find((c) => c.type === 'Complete')?.status, 'True');
        assert.equal(
          p.status.conditions?.find((c) => c.type === 'Failed'),
          undefined,
        );
      },
    },
    {
      name: 'exit non-zero: Failed with the code',
      agent: agent({ status: bound({ startTime: at(90), exitCode: 3 }), meta: boundMeta }),
      expect: (p) => {
        assert.equal(p.status.phase, 'Failed');
        assert.equal(p.status.reason, 'ExitedNonZero');
        assert.match(p.status.message ?? '', /code 3/);
      },
    },
    {
      name: 'launch error: Error',
      agent: agent({ status: bound({ launchError: 'command "nope" not found' }), meta: boundMeta }),
      expect: (p) => assert.deepEqual([p.status.phase, p.status.reason], ['Error', 'LaunchFailed']),
    },
    {
      name: 'session lost while running: Error SessionLost with what the node saw',
      agent: agent({ status: bound({ startTime: at(90), sessionLost: 'the session disappeared' }), meta: boundMeta }),
      expect: (p) => assert.deepEqual([p.status.phase, p.status.reason, p.status.message], ['Error', 'SessionLost', 'the session disappeared']),
    },
    {
      name: 'a stop after the session was lost: the loss is what ended it',
      agent: agent({ spec: { stop: true }, status: bound({ startTime: at(90), sessionLost: 'the session disappeared' }), meta: boundMeta }),
      expect: (p) => assert.equal(p.status.reason, 'SessionLost'),
    },
    {
      name: 'stop: Terminated with stopReason',
      agent: agent({ spec: { stop: true, stopReason: 'no longer needed' }, status: bound({ startTime: at(90) }), meta: boundMeta }),
      expect: (p) => assert.deepEqual([p.status.phase, p.status.reason, p.status.message], ['Terminated', 'Stopped', 'no longer needed']),
    },
    {
      name: 'active deadline passed: Terminated DeadlineExceeded',
      agent: agent({ spec: { activeDeadlineSeconds: 5 }, status: bound({ startTime: at(90) }), meta: boundMeta }),
      expect: (p) => assert.deepEqual([p.status.phase, p.status.reason], ['Terminated', 'DeadlineExceeded']),
    },
    {
      name: 'active deadline ahead: requeued at the deadline',
      agent: agent({ spec: { activeDeadlineSeconds: 30 }, status: bound({ startTime: at(90) }), meta: boundMeta }),
      expect: (p) => {
        assert.equal(p.status.phase, 'Running');
        assert.equal(p.requeueAfterMs, 20_000);
      },
    },
    {
      name: 'idle: output keeps it alive, the timeout counts from the last sign of life',
      agent: agent({ spec: { idleTimeoutSeconds: 15 }, status: bound({ startTime: at(10), lastReportTime: at(50), lastOutputTime: at(95) }), meta: boundMeta }),
      expect: (p) => {
        assert.equal(p.status.phase, 'Running');
        assert.equal(p.requeueAfterMs, 10_000);
      },
    },
    {
      name: 'idle timeout passed: Terminated IdleTimeout',
      agent: agent({ spec: { idleTimeoutSeconds: 15 }, status: bound({ startTime: at(10), lastOutputTime: at(80) }), meta: boundMeta }),
      expect: (p) => assert.deepEqual([p.status.phase, p.status.reason], ['Terminated', 'IdleTimeout']),
    },
    {
      name: 'terminal phases are sticky: a later report does not change them',
      agent: agent({ status: bound({ phase: 'Terminated', reason: 'Stopped', message: 'x', completionTime: at(50), reportedState: 'completed' }), meta: boundMeta }),
      expect: (p) => {
        assert.deepEqual([p.status.phase, p.status.reason, p.status.completionTime], ['Terminated', 'Stopped', at(50)]);
        assert.deepEqual(p.events, []);
      },
    },
    {
      name: 'cleanup recorded: CleanedUp condition and one event',
      agent: agent({
        status: bound({
          phase: 'Completed',
          reason: 'AgentCompleted',
          completionTime: at(50),
          cleanup: {
            startTime: at(51),
            completionTime: at(52),
            sessionKilled: true,
            processesKilled: 2,
            escalatedToSigkill: false,
            promptDeleted: true,
            logsArchived: true,
            archivePath: '/a',
            verifiedNoProcesses: true,
            errors: [],
          },
        }),
        meta: boundMeta,
      }),
      expect: (p) => {
        assert.equal(p.status.conditions?.find((c) => c.type === 'CleanedUp')?.status, 'True');
        assert.deepEqual(
          p.events.map((e) => e.reason),
          ['CleanedUp'],
        );
      },
    },
    {
      name: 'deleted while running: Terminated Deleted, finalizer kept until the cleanup record',
      agent: agent({ status: bound({ startTime: at(90) }), meta: { ...boundMeta, deletionTimestamp: at(99) } }),
      expect: (p) => {
        assert.deepEqual([p.status.phase, p.status.reason], ['Terminated', 'Deleted']);
        assert.equal(p.removeFinalizer, false);
      },
    },
    {
      name: 'deleted after cleanup: finalizer released',
      agent: agent({
        status: bound({
          phase: 'Terminated',
          reason: 'Deleted',
          completionTime: at(90),
          cleanup: {
            startTime: at(91),
            completionTime: at(92),
            sessionKilled: true,
            processesKilled: 1,
            escalatedToSigkill: false,
            promptDeleted: true,
            logsArchived: true,
            verifiedNoProcesses: true,
          },
        }),
        meta: { ...boundMeta, deletionTimestamp: at(89) },
      }),
      expect: (p) => assert.equal(p.removeFinalizer, true),
    },
    {
      name: 'deleted before binding: finalizer released at once',
      agent: agent({ status: { phase: 'Pending' }, meta: { deletionTimestamp: at(99) } }),
      expect: (p) => {
        assert.equal(p.removeFinalizer, true);
        assert.equal(p.status.phase, 'Terminated');
      },
    },
    {
      name: 'deleted on a node silent past the grace: finalizer released with CleanupSkipped',
      agent: agent({ status: bound({ startTime: at(10) }), meta: { ...boundMeta, deletionTimestamp: at(50) } }),
      over: { nodes: new Map([['node-1', node('node-1', { ready: false, notReadyReason: 'heartbeat stale', silentSince: T0 + 30_000 })]]) },
      expect: (p) => {
        assert.equal(p.removeFinalizer, true);
        assert.ok(p.events.some((e) => e.reason === 'CleanupSkipped' && /NodeLost/.test(e.message)));
      },
    },
    {
      name: 'node silent within the grace: still running, requeued for the grace end',
      agent: agent({ status: bound({ startTime: at(10) }), meta: boundMeta }),
      over: { nodes: new Map([['node-1', node('node-1', { ready: false, notReadyReason: 'heartbeat stale', silentSince: T0 + 80_000 })]]) },
      expect: (p) => {
        assert.equal(p.status.phase, 'Running');
        assert.equal(p.requeueAfterMs, 40_000);
      },
    },
    {
      name: 'node silent past the grace: Error NodeLost',
      agent: agent({ status: bound({ startTime: at(10) }), meta: boundMeta }),
      over: { nodes: new Map() },
      expect: (p) => assert.deepEqual([p.status.phase, p.status.reason], ['Error', 'NodeLost']),
    },
    {
      name: 'launch timeout: bound, not started, within the timeout: Scheduled, requeued for when it falls',
      agent: agent({ status: bound({ phase: 'Scheduled', reason: 'Scheduled', scheduledTime: at(50) }), meta: boundMeta }),
      expect: (p) => {
        assert.equal(p.status.phase, 'Scheduled');
        assert.equal(p.requeueAfterMs, 10_000);
        assert.deepEqual(p.events, []);
      },
    },
    {
      name: 'launch timeout: bound, not started when it falls: Error LaunchTimeout, a Warning Event, completion time',
      agent: agent({ status: bound({ phase: 'Scheduled', scheduledTime: at(40) }), meta: boundMeta }),
      expect: (p) => {
        assert.deepEqual([p.status.phase, p.status.reason], ['Error', 'LaunchTimeout']);
        assert.match(p.status.message ?? '', /bound to node node-1 at .* not started within 60s/);
        assert.deepEqual(
          p.events.map((e) => [e.type, e.reason]),
          [['Warning', 'LaunchTimeout']],
        );
        assert.equal(p.status.completionTime, at(100));
        assert.equal(p.status.conditions?.find((c) => c.type === 'Failed')?.reason, 'LaunchTimeout');
        assert.equal(p.removeFinalizer, false);
      },
    },
    {
      name: 'launch timeout: started in time, running long after: no timeout',
      agent: agent({ status: bound({ scheduledTime: at(0), startTime: at(5) }), meta: boundMeta }),
      expect: (p) => assert.equal(p.status.phase, 'Running'),
    },
    {
      name: 'launch timeout: a launch error seen first is the reason',
      agent: agent({ status: bound({ phase: 'Scheduled', scheduledTime: at(0), launchError: 'command not found: x' }), meta: boundMeta }),
      expect: (p) => assert.deepEqual([p.status.phase, p.status.reason], ['Error', 'LaunchFailed']),
    },
    {
      name: 'launch timeout: the node lost is the reason when both fall',
      agent: agent({ status: bound({ phase: 'Scheduled', scheduledTime: at(0) }), meta: boundMeta }),
      over: { nodes: new Map() },
      expect: (p) => assert.deepEqual([p.status.phase, p.status.reason], ['Error', 'NodeLost']),
    },
    {
      name: 'launch timeout: deleted meanwhile: Terminated/Deleted, the finalizer waits for the node',
      agent: agent({ status: bound({ phase: 'Scheduled', scheduledTime: at(0) }), meta: { ...boundMeta, deletionTimestamp: at(90) } }),
      expect: (p) => {
        assert.deepEqual([p.status.phase, p.status.reason], ['Terminated', 'Deleted']);
        assert.equal(p.removeFinalizer, false);
      },
    },
    {
      name: 'launch timeout: sticky, and cleaned up like any Agent once the node recorded it',
      agent: agent({
        status: bound({
          phase: 'Error',
          reason: 'LaunchTimeout',
          scheduledTime: at(0),
          completionTime: at(60),
          cleanup: {
            startTime: at(65),
            completionTime: at(70),
            sessionKilled: true,
            processesKilled: 1,
            escalatedToSigkill: false,
            promptDeleted: true,
            logsArchived: false,
            verifiedNoProcesses: true,
          },
        }),
        meta: boundMeta,
      }),
      expect: (p) => {
        assert.deepEqual([p.status.phase, p.status.reason], ['Error', 'LaunchTimeout']);
        assert.equal(p.status.conditions?.find((c) => c.type === 'CleanedUp')?.status, 'True');
        assert.ok(p.events.some((e) => e.reason === 'CleanedUp'));
      },
    },
    {
      name: 'ttl: finished agent deleted once the TTL passed',
      agent: agent({ spec: { ttlSecondsAfterFinished: 30 }, status: bound({ phase: 'Completed', reason: 'Exited', completionTime: at(60) }), meta: boundMeta }),
      expect: (p) => assert.equal(p.deleteAgent, true),
    },
    {
      name: 'ttl: not yet, requeued',
      agent: agent({ spec: { ttlSecondsAfterFinished: 60 }, status: bound({ phase: 'Completed', reason: 'Exited', completionTime: at(60) }), meta: boundMeta }),
      expect: (p) => {
        assert.equal(p.deleteAgent, false);
        assert.equal(p.requeueAfterMs, 20_000);
      },
    },
    {
      name: 'label written, status not yet (a crash between the two writes): status.nodeName follows the label, no new binding',
      agent: agent({ status: { phase: 'Pending' }, meta: boundMeta }),
      expect: (p) => {
        assert.equal(p.bindTo, undefined);
        assert.equal(p.status.nodeName, 'node-1');
        assert.equal(p.status.phase, 'Scheduled');
        assert.deepEqual(
          p.events.map((e) => e.reason),
          ['Scheduled'],
        );
      },
    },
    {
      name: "forged status.nodeName on a bound Agent: a Warning, the label's node restored, never a move",
      agent: agent({ status: bound({ nodeName: 'node-2', startTime: at(90) }), meta: boundMeta }),
      expect: (p) => {
        assert.equal(p.bindTo, undefined);
        assert.equal(p.status.nodeName, 'node-1');
        assert.equal(p.status.phase, 'Running');
        const e = p.events.find((x) => x.reason === 'BindingMismatch');
        assert.equal(e?.type, 'Warning');
        assert.match(e?.message ?? '', /status\.nodeName says node-2, but the Agent is bound to node-1/);
      },
    },
    {
      name: 'forged status.nodeName on an unbound Agent: a Warning, cleared, and scheduled as if it were absent',
      agent: agent({ spec: { nodeSelector: { gpu: 'yes' } }, status: { nodeName: 'node-1', phase: 'Pending' } }),
      expect: (p) => {
        assert.equal(p.bindTo, undefined);
        assert.equal(p.status.nodeName, undefined);
        assert.equal(p.status.reason, 'Unschedulable');
        assert.match(p.events.find((x) => x.reason === 'BindingMismatch')?.message ?? '', /never bound/);
      },
    },
    {
      name: "node pool: bound only inside the namespace's pool, however loaded the rest",
      agent: agent(),
      over: {
        nodes: new Map([
          ['node-1', node('node-1', { labels: { pool: 'a' } })],
          ['node-2', node('node-2', { labels: { pool: 'b' } })],
        ]),
        used: new Map([['node-1', 1]]),
        pool: { namespace: 'ns', annotation: 'pool=a', selector: { pool: 'a' } },
      },
      expect: (p) => assert.equal(p.bindTo, 'node-1'),
    },
    {
      name: 'node pool: a nodeSelector contradicting it is Failed (NodePoolConflict), naming the annotation, never bound',
      agent: agent({ spec: { nodeSelector: { pool: 'b' } }, meta: { finalizers: [] } }),
      over: { pool: { namespace: 'ns', annotation: 'pool=a', selector: { pool: 'a' } } },
      expect: (p) => {
        assert.deepEqual([p.status.phase, p.status.reason], ['Failed', 'NodePoolConflict']);
        assert.match(p.status.message ?? '', /orchestrator\.dev\/node-selector="pool=a" on namespace ns requires pool=a/);
        assert.equal(p.bindTo, undefined);
        assert.equal(p.addFinalizer, false);
      },
    },
    {
      name: 'node pool: a nodeName outside it is Failed (NodePoolConflict)',
      agent: agent({ spec: { nodeName: 'node-2' } }),
      over: {
        nodes: new Map([
          ['node-1', node('node-1', { labels: { pool: 'a' } })],
          ['node-2', node('node-2', { labels: { pool: 'b' } })],
        ]),
        pool: { namespace: 'ns', annotation: 'pool=a', selector: { pool: 'a' } },
      },
      expect: (p) => {
        assert.deepEqual([p.status.phase, p.status.reason], ['Failed', 'NodePoolConflict']);
        assert.match(p.status.message ?? '', /spec\.nodeName node-2 is outside the node pool/);
      },
    },
    {
      name: 'node pool: one that cannot be known keeps the Agent Pending, bound nowhere',
      agent: agent(),
      over: { pool: { namespace: 'ns', annotation: 'pool=', blocked: 'the reason' } },
      expect: (p) => {
        assert.deepEqual([p.status.phase, p.status.reason, p.status.message], ['Pending', 'Unschedulable', 'the reason']);
        assert.equal(p.bindTo, undefined);
      },
    },
    {
      name: 'steady state: no events, same status',
      agent: agent({
        status: { nodeName: 'node-1', phase: 'Running', reason: 'SessionStarted', message: 'session s started', startTime: at(90), sessionName: 's', observedGeneration: 1 },
        meta: boundMeta,
      }),
      expect: (p) => {
        assert.deepEqual(p.events, []);
        assert.equal(p.bindTo, undefined);
        assert.equal(p.status.phase, 'Running');
      },
    },
  ];
  for (const c of cases) it(c.name, () => c.expect(observe(c.agent, c.over)));

  it('limits the node could not enforce: a Warning Event and LimitsEnforced=False, the Event once', () => {
    const limited = (status: Agent['status']) => agent({ spec: { resources: { limits: { memory: '1Gi', pids: 10 } } }, status, meta: boundMeta });
    const first = observe(limited(bound({ phase: 'Scheduled', startTime: at(90), sessionName: 's', limitsNotEnforced: ['memory'] })));
    const warning = first.events.find((e) => e.reason === 'LimitsNotEnforced');
    assert.equal(warning?.type, 'Warning');
    assert.equal(warning?.message, 'memory limit(s) not enforced on node node-1: its cgroup v2 has no memory controller');
    const c = first.status.conditions?.find((x) => x.type === 'LimitsEnforced');
    assert.deepEqual([c?.status, c?.reason, c?.message], ['False', 'LimitsNotEnforced', warning?.message]);
    const again = observe(limited({ ...bound({ startTime: at(90), sessionName: 's', limitsNotEnforced: ['memory'] }), ...first.status }), { now: T0 + 200_000 });
    assert.equal(
      again.events.find((e) => e.reason === 'LimitsNotEnforced'),
      undefined,
      'said once',
    );
    assert.deepEqual(
      again.status.conditions?.find((x) => x.type === 'LimitsEnforced'),
      c,
    );
    // Finished before the controller saw it run: still said, with the end.
    const ended = observe(limited(bound({ phase: 'Scheduled', startTime: at(90), exitCode: 0, limitsNotEnforced: ['cpu', 'pids'] })));
    assert.deepEqual(ended.events.map((e) => e.reason).sort(), ['Exited', 'LimitsNotEnforced']);
    // Enforced everywhere: no such condition.
    assert.equal(
      observe(limited(bound({ startTime: at(90) }))).status.conditions?.find((x) => x.type === 'LimitsEnforced'),
      undefined,
    );
  });

  it('an output cap the node lowered: a Warning Event and OutputCapHonored=False, the Event once', () => {
    const capped = (maxSize: string, status: Agent['status']) => agent({ spec: { output: { maxSize } }, status, meta: boundMeta });
    const first = observe(capped('1Gi', bound({ phase: 'Scheduled', startTime: at(90), sessionName: 's', outputMaxBytes: 100 * 2 ** 20 })));
    const warning = first.events.find((e) => e.reason === 'OutputCapLowered');
    assert.equal(warning?.type, 'Warning');
    assert.equal(warning?.message, "spec.output.maxSize 1Gi is above node node-1's limit: 104857600 bytes of its output are kept");
    const c = first.status.conditions?.find((x) => x.type === 'OutputCapHonored');
    assert.deepEqual([c?.status, c?.reason, c?.message], ['False', 'OutputCapLowered', warning?.message]);
    const again = observe(capped('1Gi', { ...bound({ startTime: at(90), sessionName: 's', outputMaxBytes: 100 * 2 ** 20 }), ...first.status }), { now: T0 + 200_000 });
    assert.equal(
      again.events.find((e) => e.reason === 'OutputCapLowered'),
      undefined,
      'said once',
    );
    assert.deepEqual(
      again.status.conditions?.find((x) => x.type === 'OutputCapHonored'),
      c,
    );
    // Kept as asked (or raised to the node's least cap), or not yet launched: nothing said.
    for (const [maxSize, outputMaxBytes] of [
      ['64Ki', 65536],
      ['1k', 4096],
      ['1Gi', undefined],
    ] as const) {
      const p = observe(capped(maxSize, bound({ phase: 'Scheduled', startTime: at(90), sessionName: 's', ...(outputMaxBytes !== undefined ? { outputMaxBytes } : {}) })));
      assert.equal(
        p.events.find((e) => e.reason === 'OutputCapLowered'),
        undefined,
        maxSize,
      );
      assert.equal(
        p.status.conditions?.find((x) => x.type === 'OutputCapHonored'),
        undefined,
        maxSize,
      );
    }
  });

  it('a binding is written once: the pass that sees the binding (label and status) plans the status the binding wrote', () => {
    const binding = observe(agent({ meta: { finalizers: [] } }));
    assert.equal(binding.bindTo, 'node-1');
    const next = observe(agent({ status: binding.status, meta: { labels: { [NODE_LABEL]: 'node-1' } } }), { now: T0 + 100_500 });
    assert.equal(diffStatus(pickControllerStatus(binding.status), next.status), undefined);
    assert.deepEqual(next.events, []);
  });

  it('keeps lastTransitionTime when a condition does not change', () => {
    const first = observe(agent({ status: bound({ phase: 'Scheduled', startTime: at(90) }), meta: boundMeta }));
    const again = observe(agent({ status: { ...bound({ startTime: at(90) }), ...first.status }, meta: boundMeta }), { now: T0 + 200_000 });
    assert.deepEqual(again.status.conditions, first.status.conditions);
    assert.deepEqual(again.events, []);
  });
});

describe('reconcile: kstatus conditions (Ready, Reconciling, Stalled)', () => {
  const cleanup = { startTime: at(51), completionTime: at(52), sessionKilled: true, processesKilled: 1, escalatedToSigkill: false, promptDeleted: true, logsArchived: true, verifiedNoProcesses: true };
  const full = new Map([
    ['node-1', 2],
    ['node-2', 2],
  ]);
  /** want: each kstatus condition present, as `status reason`; absent ones must be absent. */
  const cases: { name: string; agent: Agent; over?: Partial<Observed>; want: Record<string, string> }[] = [
    {
      name: 'just bound: Reconciling',
      agent: agent(),
      want: { Ready: 'False Scheduled', Reconciling: 'True Scheduled' },
    },
    {
      name: 'Pending for a slot on a full node: a queue, Reconciling',
      agent: agent(),
      over: { used: full },
      want: { Ready: 'False Unschedulable', Reconciling: 'True Unschedulable' },
    },
    {
      name: 'Pending with no node matching the selector: Stalled',
      agent: agent({ spec: { nodeSelector: { gpu: 'yes' } } }),
      want: { Ready: 'False Unschedulable', Stalled: 'True Unschedulable' },
    },
    {
      name: 'Pending on a spec.nodeName that does not exist: Stalled',
      agent: agent({ spec: { nodeName: 'node-9' } }),
      want: { Ready: 'False Unschedulable', Stalled: 'True Unschedulable' },
    },
    {
      name: 'Pending with every node cordoned or not ready: Stalled (even if one is also full)',
      agent: agent(),
      over: {
        nodes: new Map([
          ['node-1', node('node-1', { unschedulable: true })],
          ['node-2', node('node-2', { ready: false })],
        ]),
        used: full,
      },
      want: { Ready: 'False Unschedulable', Stalled: 'True Unschedulable' },
    },
    {
      name: 'Pending where the only matching node has no capacity at all: Stalled',
      agent: agent(),
      over: { nodes: new Map([['node-1', node('node-1', { capacity: 0 })]]) },
      want: { Ready: 'False Unschedulable', Stalled: 'True Unschedulable' },
    },
    {
      name: 'Running: Reconciling',
      agent: agent({ status: bound({ startTime: at(90), sessionName: 's' }), meta: boundMeta }),
      want: { Ready: 'False SessionStarted', Reconciling: 'True SessionStarted' },
    },
    {
      name: 'Working: Reconciling',
      agent: agent({ status: bound({ startTime: at(90), reportedState: 'working' }), meta: boundMeta }),
      want: { Ready: 'False AgentWorking', Reconciling: 'True AgentWorking' },
    },
    {
      name: 'Blocked: Reconciling (the agent may go on by itself)',
      agent: agent({ status: bound({ startTime: at(90), reportedState: 'blocked' }), meta: boundMeta }),
      want: { Ready: 'False AgentBlocked', Reconciling: 'True AgentBlocked' },
    },
    {
      name: 'Completed, cleanup not recorded yet: Reconciling CleaningUp',
      agent: agent({ status: bound({ startTime: at(90), exitCode: 0 }), meta: boundMeta }),
      want: { Ready: 'False CleaningUp', Reconciling: 'True CleaningUp' },
    },
    {
      name: 'Completed and cleaned up: Ready',
      agent: agent({ status: bound({ phase: 'Completed', reason: 'Exited', message: 'm', completionTime: at(50), cleanup }), meta: boundMeta }),
      want: { Ready: 'True Exited' },
    },
    {
      name: 'Completed, cleaned up with errors: still Ready (CleanedUp carries the errors)',
      agent: agent({ status: bound({ phase: 'Completed', reason: 'Exited', completionTime: at(50), cleanup: { ...cleanup, logsArchived: false, errors: ['archive: disk full'] } }), meta: boundMeta }),
      want: { Ready: 'True Exited' },
    },
    {
      name: 'Failed: Stalled at once, before the cleanup',
      agent: agent({ status: bound({ startTime: at(90), exitCode: 3 }), meta: boundMeta }),
      want: { Ready: 'False ExitedNonZero', Stalled: 'True ExitedNonZero' },
    },
    {
      name: 'Failed and cleaned up: Stalled',
      agent: agent({ status: bound({ phase: 'Failed', reason: 'AgentFailed', completionTime: at(50), cleanup }), meta: boundMeta }),
      want: { Ready: 'False AgentFailed', Stalled: 'True AgentFailed' },
    },
    {
      name: 'invalid spec: Stalled',
      agent: agent({ spec: { workingDir: 'relative' } }),
      want: { Ready: 'False InvalidSpec', Stalled: 'True InvalidSpec' },
    },
    {
      name: 'Error (launch failed): Stalled',
      agent: agent({ status: bound({ launchError: 'command "nope" not found' }), meta: boundMeta }),
      want: { Ready: 'False LaunchFailed', Stalled: 'True LaunchFailed' },
    },
    {
      name: 'Error (node lost, its cleanup may never come): Stalled',
      agent: agent({ status: bound({ startTime: at(10) }), meta: boundMeta }),
      over: { nodes: new Map() },
      want: { Ready: 'False NodeLost', Stalled: 'True NodeLost' },
    },
    {
      name: 'Terminated by spec.stop: Stalled',
      agent: agent({ spec: { stop: true }, status: bound({ startTime: at(90) }), meta: boundMeta }),
      want: { Ready: 'False Stopped', Stalled: 'True Stopped' },
    },
    {
      name: 'Terminated by the deadline: Stalled',
      agent: agent({ spec: { activeDeadlineSeconds: 5 }, status: bound({ startTime: at(90) }), meta: boundMeta }),
      want: { Ready: 'False DeadlineExceeded', Stalled: 'True DeadlineExceeded' },
    },
    {
      name: 'deleted while running: Stalled Deleted while the finalizer holds',
      agent: agent({ status: bound({ startTime: at(90) }), meta: { ...boundMeta, deletionTimestamp: at(99) } }),
      want: { Ready: 'False Deleted', Stalled: 'True Deleted' },
    },
  ];
  const kstatusOf = (conditions: Condition[] | undefined) =>
    Object.fromEntries((conditions ?? []).filter((c) => ['Ready', 'Reconciling', 'Stalled'].includes(c.type)).map((c) => [c.type, `${c.status} ${c.reason}`]));
  for (const c of cases) it(c.name, () => assert.deepEqual(kstatusOf(observe(c.agent, c.over).status.conditions), c.want));

  it('the phase message is the message of every kstatus condition', () => {
    const p = observe(agent({ status: bound({ startTime: at(90), exitCode: 3 }), meta: boundMeta }));
    for (const type of ['Ready', 'Stalled']) assert.equal(p.status.conditions?.find((c) => c.type === type)?.message, 'the command exited with code 3');
  });

  it('CleaningUp says whose cleanup it waits for', () => {
    const p = observe(agent({ status: bound({ startTime: at(90), exitCode: 0 }), meta: boundMeta }));
    assert.equal(p.status.conditions?.find((c) => c.type === 'Reconciling')?.message, 'the command exited with code 0; waiting for node node-1 to record its cleanup');
  });

  it('a stall that clears: Stalled removed, Reconciling back, once a node fits', () => {
    const stalled = observe(agent({ spec: { nodeSelector: { gpu: 'yes' } } }));
    const later = observe(agent({ spec: { nodeSelector: { gpu: 'yes' } }, status: stalled.status }), {
      nodes: new Map([['node-1', node('node-1', { labels: { gpu: 'yes' } })]]),
      now: T0 + 130_000,
    });
    assert.deepEqual(kstatusOf(later.status.conditions), { Ready: 'False Scheduled', Reconciling: 'True Scheduled' });
    // Ready stayed False: its transition time is the first reconcile's.
    assert.equal(later.status.conditions?.find((c) => c.type === 'Ready')?.lastTransitionTime, at(100));
  });

  it('observedGeneration: top level and on every condition, also those set at an older generation', () => {
    const first = observe(agent({ status: bound({ startTime: at(90) }), meta: boundMeta }));
    assert.ok(first.status.conditions!.every((c) => c.observedGeneration === 1));
    const bumped = observe(agent({ spec: { stop: true }, status: { ...bound({ startTime: at(90) }), ...first.status }, meta: { ...boundMeta, generation: 2 } }));
    assert.equal(bumped.status.observedGeneration, 2);
    assert.deepEqual(
      bumped.status.conditions!.map((c) => [c.type, c.observedGeneration]),
      bumped.status.conditions!.map((c) => [c.type, 2]),
    );
    assert.ok(
      bumped.status.conditions!.some((c) => c.type === 'Scheduled'),
      'a condition not re-set on this pass is still stamped',
    );
  });
});
