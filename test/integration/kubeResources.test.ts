/**
 * The typed resource client against a real API server: finalizer edits racing each other (nobody's
 * edit is lost), status merge patches, preconditions, and what a deletion with our finalizer looks like.
 */
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { AGENT_KIND, API_VERSION, FINALIZER } from '../../src/api/constants.js';
import { closeConnections, shareConnections } from '../../src/kube/client.js';
import { isConflict, StaleObjectError } from '../../src/kube/errors.js';
import { diffStatus } from '../../src/kube/mergePatch.js';
import { agentClient, refOf } from '../../src/kube/resources.js';
import { createTestNamespace, kubeConfig } from '../support/cluster.js';

type Agents = ReturnType<typeof agentClient>;
type AgentObj = Awaited<ReturnType<Agents['get']>>;

function client(t: TestContext): Agents {
  const kc = shareConnections(kubeConfig());
  t.after(() => closeConnections(kc));
  return agentClient(kc);
}

const body = (name: string, namespace: string) => ({
  apiVersion: API_VERSION,
  kind: AGENT_KIND,
  metadata: { name, namespace },
  spec: { prompt: 'p', command: ['true'] },
});

/** What a reconcile does on a conflict, compressed: re-read and try again. */
async function retryOnConflict(agents: Agents, first: AgentObj, edit: (o: AgentObj) => Promise<AgentObj>): Promise<{ result: AgentObj; conflicts: number }> {
  let obj = first;
  for (let conflicts = 0; conflicts < 10; conflicts++) {
    try {
      return { result: await edit(obj), conflicts };
    } catch (err) {
      if (!isConflict(err)) throw err;
      assert.ok(err instanceof StaleObjectError, 'a failed guard is reported as StaleObjectError');
      obj = await agents.get(refOf(obj));
    }
  }
  throw new Error('still conflicting after 10 attempts');
}

const OTHER_A = 'example.com/a';
const OTHER_B = 'example.com/b';

const races: { name: string; initial: string[]; edits: [(a: Agents, o: AgentObj) => Promise<AgentObj>, (a: Agents, o: AgentObj) => Promise<AgentObj>]; final: string[] | undefined }[] = [
  {
    name: 'two writers add the first finalizers from the same read',
    initial: [],
    edits: [(a, o) => a.addFinalizer(o, OTHER_A), (a, o) => a.addFinalizer(o, OTHER_B)],
    final: [OTHER_A, OTHER_B],
  },
  {
    name: 'two writers add to an existing list from the same read',
    initial: [FINALIZER],
    edits: [(a, o) => a.addFinalizer(o, OTHER_A), (a, o) => a.addFinalizer(o, OTHER_B)],
    final: [FINALIZER, OTHER_A, OTHER_B],
  },
  {
    name: 'two writers remove different finalizers from the same read',
    initial: [OTHER_A, FINALIZER, OTHER_B],
    edits: [(a, o) => a.removeFinalizer(o, OTHER_A), (a, o) => a.removeFinalizer(o, OTHER_B)],
    final: [FINALIZER],
  },
  {
    name: 'one adds while the other removes',
    initial: [FINALIZER],
    edits: [(a, o) => a.removeFinalizer(o, FINALIZER), (a, o) => a.addFinalizer(o, OTHER_A)],
    final: [OTHER_A],
  },
];

for (const c of races) {
  test(`finalizer race: ${c.name} — neither edit is lost`, async (t) => {
    const ns = await createTestNamespace(t, 'kube-finalizers');
    const agents = client(t);
    let obj = await agents.create(body('a', ns));
    if (c.initial.length > 0) obj = await agents.patchMeta(refOf(obj), { finalizers: c.initial });
    t.after(() => agents.patchMeta({ name: 'a', namespace: ns }, { finalizers: null }).catch(() => undefined));
    const results = await Promise.all(c.edits.map((edit) => retryOnConflict(agents, obj, (o) => edit(agents, o))));
    const conflicts = results.map((r) => r.conflicts);
    assert.equal(Math.min(...conflicts), 0, 'one writer got through first time');
    assert.ok(Math.max(...conflicts) >= 1, `the other was told its read was stale (conflicts: ${conflicts.join(',')})`);
    const final = await agents.get(refOf(obj));
    assert.deepEqual(final.metadata?.finalizers?.slice().sort(), c.final?.slice().sort());
  });
}

test('deleting an Agent with our finalizer waits for its removal, then the Agent is gone', async (t) => {
  const ns = await createTestNamespace(t, 'kube-finalizer-delete');
  const agents = client(t);
  const created = await agents.create(body('a', ns));
  const withFinalizer = await agents.addFinalizer(created, FINALIZER);
  assert.deepEqual(withFinalizer.metadata?.finalizers, [FINALIZER]);
  assert.equal(await agents.addFinalizer(withFinalizer, FINALIZER), withFinalizer, 'adding again is a no-op');
  assert.equal(await agents.delete(refOf(created), { uid: created.metadata?.uid }), true);
  const deleting = await agents.get(refOf(created));
  assert.ok(deleting.metadata?.deletionTimestamp, 'held by the finalizer');
  await agents.removeFinalizer(deleting, FINALIZER);
  assert.equal(await agents.find(refOf(created)), undefined);
  assert.equal(await agents.delete(refOf(created)), false, 'deleting again: already gone');
});

test('status merge patches: keys merge, null removes, no generation bump; diffStatus skips no-op writes', async (t) => {
  const ns = await createTestNamespace(t, 'kube-status');
  const agents = client(t);
  const created = await agents.create(body('a', ns));
  // The CRD defaults status.observedGeneration to 0 (not reconciled yet, for kstatus); patches keep it.
  const unreconciled = { observedGeneration: 0 };
  assert.deepEqual(created.status, unreconciled);
  const first = await agents.patchStatus(refOf(created), { phase: 'Pending', message: 'queued', progress: 0 });
  assert.deepEqual(first.status, { ...unreconciled, phase: 'Pending', message: 'queued', progress: 0 });
  const second = await agents.patchStatus(refOf(created), { phase: 'Running', message: null });
  assert.deepEqual(second.status, { ...unreconciled, phase: 'Running', progress: 0 });
  assert.equal(second.metadata?.generation, created.metadata?.generation, 'status writes do not bump generation');
  assert.equal(diffStatus(second.status, { ...unreconciled, phase: 'Running', progress: 0 }), undefined, 'nothing to write');
  const patch = diffStatus(second.status, { ...unreconciled, phase: 'Running', progress: 40 });
  assert.deepEqual(patch, { progress: 40 });
  const third = await agents.patchStatus(refOf(created), patch);
  assert.deepEqual(third.status, { ...unreconciled, phase: 'Running', progress: 40 });
});

test('preconditions: a stale resourceVersion and an old uid are conflicts, and change nothing', async (t) => {
  const ns = await createTestNamespace(t, 'kube-preconditions');
  const agents = client(t);
  const old = await agents.create(body('a', ns));
  await agents.patchStatus(refOf(old), { phase: 'Pending' }); // moves the resourceVersion on
  const stale = await agents.patchStatus(refOf(old), { phase: 'Running' }, { resourceVersion: old.metadata?.resourceVersion }).catch((e: unknown) => e);
  assert.ok(isConflict(stale), 'stale resourceVersion: 409');
  assert.equal((await agents.get(refOf(old))).status?.phase, 'Pending');

  assert.equal(await agents.delete(refOf(old)), true);
  const reborn = await agents.create(body('a', ns));
  const wrongUid = await agents.delete(refOf(old), { uid: old.metadata?.uid }).catch((e: unknown) => e);
  assert.ok(isConflict(wrongUid), 'deleting the old incarnation by uid: 409');
  assert.equal((await agents.get(refOf(old))).metadata?.uid, reborn.metadata?.uid, 'the new Agent is untouched');
});
