import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Agent, SpawnRequest } from '../../src/api/agent.js';
import { API_VERSION, PARENT_LABEL, ROOT_LABEL } from '../../src/api/constants.js';
import { childManifest, parentOutcome, planChildren, type AgentWithOwners, type ChildrenObserved, type ChildrenPlan } from '../../src/controller/children.js';
import { completionVerified } from '../../src/controller/completion.js';
import type { Phase } from '../../src/api/phase.js';

const PARENT_UID = '11111111-2222-3333-4444-555555555555';
const at = (s: number) => new Date(Date.parse('2026-11-25T10:00:00Z') + s * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');

function parent(over: { spec?: Partial<Agent['spec']>; status?: Agent['status']; meta?: Partial<NonNullable<Agent['metadata']>> } = {}): AgentWithOwners {
  return {
    metadata: { name: 'lead', namespace: 'ns', uid: PARENT_UID, ...over.meta },
    spec: { prompt: 'p', command: ['x'], children: { maxTotal: 3, maxConcurrent: 2, maxDepth: 2 }, ...over.spec },
    status: { phase: 'Running', nodeName: 'node-1', ...over.status },
  };
}

const request = (name: string, t = 0): SpawnRequest => ({ name, requestTime: at(t), spec: { prompt: `do ${name}`, command: ['sh', '-c', 'true'] } });

function child(name: string, phase: Phase, over: Partial<AgentWithOwners> = {}): AgentWithOwners {
  return {
    metadata: {
      name,
      namespace: 'ns',
      uid: `uid-${name}`,
      ownerReferences: [{ apiVersion: API_VERSION, kind: 'Agent', name: 'lead', uid: PARENT_UID, controller: true }],
    },
    spec: { prompt: 'p', command: ['x'] },
    status: { phase, nodeName: 'node-1' },
    ...over,
  };
}

function plan(p: AgentWithOwners, children: AgentWithOwners[] = [], taken: string[] = []): ChildrenPlan {
  const o: ChildrenObserved = { parent: p, children, taken: new Set(taken) };
  return planChildren(o);
}

const created = (p: ChildrenPlan) => p.create.map((c) => c.metadata?.name);
const refusedFields = (p: ChildrenPlan) => Object.fromEntries((p.status?.refused ?? []).map((r) => [r.name, r.field]));

describe('planChildren', () => {
  const cases: { name: string; parent: AgentWithOwners; children?: AgentWithOwners[]; taken?: string[]; expect: (p: ChildrenPlan) => void }[] = [
    {
      name: 'no children and no requests: nothing to write',
      parent: parent(),
      expect: (p) => {
        assert.equal(p.status, undefined);
        assert.deepEqual(p.create, []);
      },
    },
    {
      name: 'a request within the limits: recorded (no uid yet) and created',
      parent: parent({ status: { spawnRequests: [request('lead-a')] } }),
      expect: (p) => {
        assert.deepEqual(created(p), ['lead-a']);
        assert.deepEqual(p.status?.agents, [{ name: 'lead-a', phase: 'Pending' }]);
        assert.deepEqual([p.status?.active, p.status?.succeeded, p.status?.failed], [1, 0, 0]);
        assert.deepEqual(
          p.events.map((e) => e.reason),
          ['ChildCreated'],
        );
      },
    },
    {
      name: 'requests past maxConcurrent: the first two created, the third refused naming the field',
      parent: parent({ status: { spawnRequests: [request('lead-c', 3), request('lead-a', 1), request('lead-b', 2)] } }),
      expect: (p) => {
        assert.deepEqual(created(p), ['lead-a', 'lead-b']);
        assert.deepEqual(refusedFields(p), { 'lead-c': 'spec.children.maxConcurrent' });
        assert.match(p.status!.refused![0]!.message, /maxConcurrent is 2 and 2 children are active/);
      },
    },
    {
      name: 'past maxTotal: finished children count too',
      parent: parent({
        status: {
          spawnRequests: [request('lead-a'), request('lead-b'), request('lead-c'), request('lead-d', 9)],
          children: { active: 0, succeeded: 3, failed: 0, agents: ['lead-a', 'lead-b', 'lead-c'].map((name) => ({ name, uid: `uid-${name}`, phase: 'Completed' as const })) },
        },
      }),
      expect: (p) => {
        assert.deepEqual(created(p), []);
        assert.deepEqual(refusedFields(p), { 'lead-d': 'spec.children.maxTotal' });
        assert.equal(p.status?.succeeded, 3, 'deleted children keep their last state');
      },
    },
    {
      name: 'no spec.children: refused naming spec.children',
      parent: parent({ spec: { children: undefined }, status: { spawnRequests: [request('lead-a')] } }),
      expect: (p) => assert.deepEqual(refusedFields(p), { 'lead-a': 'spec.children' }),
    },
    {
      name: 'maxDepth 0 (a child at the bottom of its tree): refused naming spec.children.maxDepth',
      parent: parent({ spec: { children: { maxTotal: 3, maxConcurrent: 2, maxDepth: 0 } }, status: { spawnRequests: [request('lead-a')] } }),
      expect: (p) => assert.deepEqual(refusedFields(p), { 'lead-a': 'spec.children.maxDepth' }),
    },
    {
      name: 'the parent has ended: refused',
      parent: parent({ status: { phase: 'Completed', spawnRequests: [request('lead-a')] } }),
      expect: (p) => assert.deepEqual(refusedFields(p), { 'lead-a': 'status.phase' }),
    },
    {
      name: "the name is another Agent's: refused naming name",
      parent: parent({ status: { spawnRequests: [request('lead-a')] } }),
      taken: ['lead-a'],
      expect: (p) => assert.deepEqual(refusedFields(p), { 'lead-a': 'name' }),
    },
    {
      name: 'a refusal already answered for this request time: not judged again, no second event',
      parent: parent({
        spec: { children: undefined },
        status: { spawnRequests: [request('lead-a', 5)], children: { active: 0, succeeded: 0, failed: 0, refused: [{ name: 'lead-a', requestTime: at(5), field: 'spec.children', message: 'm' }] } },
      }),
      expect: (p) => {
        assert.deepEqual(p.events, []);
        assert.equal(p.status?.refused?.[0]?.message, 'm');
      },
    },
    {
      name: 'a refused request retried (new request time) once a slot is free: created, refusal dropped',
      parent: parent({
        status: {
          spawnRequests: [request('lead-c', 9)],
          children: { active: 0, succeeded: 0, failed: 0, refused: [{ name: 'lead-c', requestTime: at(5), field: 'spec.children.maxConcurrent', message: 'm' }] },
        },
      }),
      expect: (p) => {
        assert.deepEqual(created(p), ['lead-c']);
        assert.equal(p.status?.refused, undefined);
      },
    },
    {
      name: 'a recorded child not yet seen in the cache: created again (idempotent by name), not counted twice',
      parent: parent({ status: { spawnRequests: [request('lead-a')], children: { active: 1, succeeded: 0, failed: 0, agents: [{ name: 'lead-a', phase: 'Pending' }] } } }),
      expect: (p) => {
        assert.deepEqual(created(p), ['lead-a']);
        assert.equal(p.status?.agents?.length, 1);
        assert.deepEqual(p.events, []);
      },
    },
    {
      name: 'a retried spawn of a child that exists: nothing created',
      parent: parent({ status: { spawnRequests: [request('lead-a', 7)] } }),
      children: [child('lead-a', 'Running')],
      expect: (p) => {
        assert.deepEqual(created(p), []);
        assert.equal(p.status?.agents?.[0]?.uid, 'uid-lead-a');
      },
    },
    {
      name: 'the mirror: each child summarised, counted as a Job counts Pods',
      parent: parent(),
      children: [child('lead-a', 'Working', { status: { phase: 'Working', progress: 40, message: 'half', findings: { total: 2 } } }), child('lead-b', 'Completed'), child('lead-c', 'Terminated')],
      expect: (p) => {
        assert.deepEqual([p.status?.active, p.status?.succeeded, p.status?.failed], [1, 1, 1]);
        assert.deepEqual(p.status?.agents?.[0], { name: 'lead-a', uid: 'uid-lead-a', phase: 'Working', progress: 40, message: 'half', findings: 2 });
      },
    },
    {
      name: 'a stop request for a running child: stopped with its reason; for a finished one: nothing',
      parent: parent({
        status: {
          stopRequests: [
            { name: 'lead-a', reason: 'enough', requestTime: at(1) },
            { name: 'lead-b', requestTime: at(1) },
          ],
        },
      }),
      children: [child('lead-a', 'Running'), child('lead-b', 'Completed')],
      expect: (p) => assert.deepEqual(p.stop, [{ name: 'lead-a', reason: 'enough' }]),
    },
  ];
  for (const c of cases) it(c.name, () => c.expect(plan(c.parent, c.children, c.taken)));
});

describe('childManifest', () => {
  it('owned by the parent, on its node, labelled with parent and root, limits narrowed by one generation', () => {
    const m = childManifest(parent({ meta: { labels: { [ROOT_LABEL]: 'top' } }, spec: { completionChecks: { minDurationSeconds: 5 } } }), request('lead-a'));
    assert.equal(m.metadata?.namespace, 'ns');
    assert.deepEqual(m.metadata?.labels, { [PARENT_LABEL]: 'lead', [ROOT_LABEL]: 'top' });
    assert.deepEqual(m.metadata?.ownerReferences, [{ apiVersion: API_VERSION, kind: 'Agent', name: 'lead', uid: PARENT_UID, controller: true, blockOwnerDeletion: true }]);
    assert.equal(m.spec.nodeName, 'node-1');
    assert.deepEqual(m.spec.children, { maxTotal: 3, maxConcurrent: 2, maxDepth: 1 });
    assert.deepEqual(m.spec.completionChecks, { minDurationSeconds: 5 });
    assert.equal(m.spec.prompt, 'do lead-a');
  });
  it("the child's own output cap is kept (the node lowers one above its limit, as for any Agent)", () => {
    const r = request('lead-a');
    const m = childManifest(parent(), { ...r, spec: { ...r.spec, output: { maxSize: '2Mi' } } });
    assert.deepEqual(m.spec.output, { maxSize: '2Mi' });
  });
  it('a root parent names itself as the root', () => {
    assert.equal(childManifest(parent(), request('lead-a')).metadata?.labels?.[ROOT_LABEL], 'lead');
  });
});

describe('parentOutcome', () => {
  const cases: { name: string; parent: AgentWithOwners | undefined; expect: string | undefined }[] = [
    { name: 'parent running: nothing', parent: parent(), expect: undefined },
    { name: 'parent ended: ParentStopped', parent: parent({ status: { phase: 'Terminated', reason: 'Stopped' } }), expect: 'parent lead ended (Terminated, Stopped)' },
    { name: 'parent past its deadline: ParentStopped', parent: parent({ status: { phase: 'Terminated', reason: 'DeadlineExceeded' } }), expect: 'parent lead ended (Terminated, DeadlineExceeded)' },
    { name: 'parent completed: ParentStopped', parent: parent({ status: { phase: 'Completed', reason: 'AgentCompleted' } }), expect: 'parent lead ended (Completed, AgentCompleted)' },
    { name: 'parent being deleted: ParentStopped', parent: parent({ meta: { deletionTimestamp: at(0) } }), expect: 'parent lead is being deleted' },
    { name: 'parent gone: ParentStopped', parent: undefined, expect: 'parent lead no longer exists' },
    { name: "another Agent with the parent's name (new UID): ParentStopped", parent: parent({ meta: { uid: 'other' } }), expect: 'parent lead no longer exists' },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const o = parentOutcome(child('lead-a', 'Running'), c.parent);
      assert.equal(o?.message, c.expect);
      if (o) assert.deepEqual([o.phase, o.reason], ['Terminated', 'ParentStopped']);
    });
  }
  it('an Agent without an owner is never ParentStopped', () => {
    assert.equal(parentOutcome(parent(), undefined), undefined);
  });
});

describe('completionVerified', () => {
  const done = (status: Agent['status'], spec: Partial<Agent['spec']> = {}) =>
    completionVerified({ spec: { prompt: 'p', command: ['x'], ...spec }, status }, { phase: 'Completed', reason: 'AgentCompleted' });
  const cases: { name: string; result: ReturnType<typeof done>; status?: string; reason?: string }[] = [
    { name: 'defaults met (10 s, 1 report): True', result: done({ startTime: at(0), lastReportTime: at(30), progressReports: 1 }), status: 'True', reason: 'ChecksPassed' },
    { name: 'too fast: False, CompletedTooFast', result: done({ startTime: at(0), lastReportTime: at(3), progressReports: 2 }), status: 'False', reason: 'CompletedTooFast' },
    { name: 'no progress report: False, TooFewProgressReports', result: done({ startTime: at(0), lastReportTime: at(60) }), status: 'False', reason: 'TooFewProgressReports' },
    { name: 'both: both reasons', result: done({ startTime: at(0), lastReportTime: at(1) }), status: 'False', reason: 'CompletedTooFast,TooFewProgressReports' },
    {
      name: 'checks relaxed in the spec: True',
      result: done({ startTime: at(0), lastReportTime: at(1) }, { completionChecks: { minDurationSeconds: 0, minProgressReports: 0 } }),
      status: 'True',
      reason: 'ChecksPassed',
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      assert.equal(c.result?.status, c.status);
      assert.equal(c.result?.reason, c.reason);
    });
  }
  it('only a reported completion is checked (an exit 0 claims nothing)', () => {
    assert.equal(completionVerified({ spec: { prompt: 'p', command: ['x'] }, status: {} }, { phase: 'Completed', reason: 'Exited' }), undefined);
  });
});
