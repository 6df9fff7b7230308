/**
 * The generated CRDs on a real API server: installed and Established, documented for
 * `kubectl explain`, printed with the intended columns, and validating exactly like the zod
 * schemas they come from (a table of good and bad Agents, both directions).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ApiextensionsV1Api, CustomObjectsApi } from '@kubernetes/client-node';
import { agentSchema, agentSpec, formatIssues } from '../../src/api/agent.js';
import { AGENT_KIND, AGENT_PLURAL, API_VERSION, GROUP, LIMITS, VERSION } from '../../src/api/constants.js';
import { transitionRulesOf } from '../../src/api/rules.js';
import { apiErrorMessage } from '../../src/dev/apiErrors.js';
import { installCrds, readCrds } from '../../src/dev/crds.js';
import { createTestNamespace, kubeConfig, kubectl } from '../support/cluster.js';

type Json = Record<string, unknown>;

const custom = () => kubeConfig().makeApiClient(CustomObjectsApi);
const where = (namespace: string) => ({ group: GROUP, version: VERSION, namespace, plural: AGENT_PLURAL });

const goodSpec = (extra: Json = {}): Json => ({ prompt: 'Fix the flaky test.', command: ['claude', '-p', '$(AGENT_PROMPT_FILE)'], ...extra });
const agentObject = (name: string, spec: unknown): Json => ({ apiVersion: API_VERSION, kind: AGENT_KIND, metadata: { name }, ...(spec === undefined ? {} : { spec }) });

async function createAgent(namespace: string, body: Json): Promise<Json> {
  return (await custom().createNamespacedCustomObject({ ...where(namespace), body, fieldValidation: 'Strict' })) as Json;
}

async function setStatus(namespace: string, name: string, status: Json): Promise<Json> {
  const current = (await custom().getNamespacedCustomObject({ ...where(namespace), name })) as Json;
  return (await custom().replaceNamespacedCustomObjectStatus({
    ...where(namespace),
    name,
    body: { ...current, status },
    fieldValidation: 'Strict',
  })) as Json;
}

/** What the API server says: undefined when it accepts, its message when it rejects. */
async function serverVerdict(call: () => Promise<unknown>): Promise<string | undefined> {
  try {
    await call();
    return undefined;
  } catch (err) {
    return apiErrorMessage(err);
  }
}

test('the CRDs install, are Established, and installing again is a no-op replace', async () => {
  const names = await installCrds(kubeConfig());
  assert.deepEqual(names.sort(), (await readCrds()).map((c) => c.metadata!.name!).sort());
  const api = kubeConfig().makeApiClient(ApiextensionsV1Api);
  for (const name of names) {
    const crd = await api.readCustomResourceDefinition({ name });
    assert.equal(crd.status?.conditions?.find((c) => c.type === 'Established')?.status, 'True', `${name} Established`);
    if (name.startsWith(`${AGENT_PLURAL}.`)) {
      // The stored schema kept what a typed client drops from plain YAML: CEL rules, enums, list types.
      const root = crd.spec.versions[0]?.schema?.openAPIV3Schema;
      const spec = root?.properties?.spec;
      assert.ok(
        root?.x_kubernetes_validations?.some((r) => r.rule.includes('oldSelf.status.nodeName')),
        'root CEL rule stored',
      );
      assert.ok(
        spec?.x_kubernetes_validations?.some((r) => r.message?.includes('spec.prompt or spec.promptFrom')),
        'spec CEL rule stored',
      );
      assert.equal(spec?.properties?.env?.x_kubernetes_list_type, 'map');
      assert.ok(root?.properties?.status?.properties?.phase?._enum?.includes('Terminated'), 'phase enum stored');
    }
  }
});

test('kubectl explain teaches the Agent API', async () => {
  const spec = await kubectl(['explain', 'agent.spec']);
  assert.equal(spec.exitCode, 0, spec.stderr);
  for (const field of [
    'prompt',
    'promptFrom',
    'command',
    'workingDir',
    'env',
    'nodeSelector',
    'nodeName',
    'activeDeadlineSeconds',
    'idleTimeoutSeconds',
    'ttlSecondsAfterFinished',
    'cleanup',
    'stop',
  ]) {
    assert.match(spec.stdout, new RegExp(`^\\s+${field}\\s+<`, 'm'), `explain agent.spec lists ${field}`);
  }
  assert.match(spec.stdout, /command\s+<\[\]string> -required-/);
  assert.match(spec.stdout, /argv array; never run through a shell/);
  assert.match(spec.stdout, /Immutable once the Agent is scheduled/);

  const phase = await kubectl(['explain', 'agent.status.phase']);
  assert.equal(phase.exitCode, 0, phase.stderr);
  assert.match(phase.stdout, /Lifecycle phase/);
  assert.match(phase.stdout, /Terminated/);
});

test('kubectl get ag shows PHASE NODE PROGRESS AGE, and -o wide adds REASON MESSAGE', async (t) => {
  const ns = await createTestNamespace(t, 'crd-columns');
  await createAgent(ns, agentObject('printed', goodSpec()));
  await setStatus(ns, 'printed', { phase: 'Working', nodeName: 'node-a', progress: 40, reason: 'Reported', message: 'halfway there' });

  const table = (out: string) =>
    out
      .trim()
      .split('\n')
      .map((l) => l.trim().split(/\s{2,}/));
  const plain = await kubectl(['get', 'ag', '-n', ns]);
  assert.equal(plain.exitCode, 0, plain.stderr);
  const [header, row] = table(plain.stdout);
  assert.deepEqual(header, ['NAME', 'PHASE', 'NODE', 'PROGRESS', 'AGE']);
  assert.deepEqual(row?.slice(0, 4), ['printed', 'Working', 'node-a', '40']);

  // The plural, not only the short name, lists Agents alone (no category of the same name).
  const wide = await kubectl(['get', 'agents', '-n', ns, '-o', 'wide']);
  assert.equal(wide.exitCode, 0, wide.stderr);
  const [wideHeader, wideRow] = table(wide.stdout);
  assert.deepEqual(wideHeader, ['NAME', 'PHASE', 'NODE', 'PROGRESS', 'AGE', 'REASON', 'MESSAGE']);
  assert.deepEqual([wideRow?.[0], ...(wideRow?.slice(-2) ?? [])], ['printed', 'Reported', 'halfway there']);
});

/** A spec given at creation. */
interface CreateCase {
  kind: 'create';
  name: string;
  spec: unknown;
}
/** A status written through the status subresource of a valid Agent. */
interface StatusCase {
  kind: 'status';
  name: string;
  status: Json;
}
/** A spec update, on an Agent that is scheduled (status.nodeName set) or not, and maybe stopped. */
interface UpdateCase {
  kind: 'update';
  name: string;
  scheduled: boolean;
  initial?: Json;
  change: (spec: Json) => Json;
}
type Case = (CreateCase | StatusCase | UpdateCase) & {
  accept: boolean;
  /** Text the API server's rejection must contain: the offending field. */
  field?: string;
  /** Where zod's message names the field differently (unknown keys). */
  zodField?: string;
};

const without = (spec: Json, key: string): Json => Object.fromEntries(Object.entries(spec).filter(([k]) => k !== key));

const CASES: Case[] = [
  // Good Agents: both must accept.
  { kind: 'create', name: 'minimal', spec: goodSpec(), accept: true },
  {
    kind: 'create',
    name: 'every field',
    spec: {
      promptFrom: { configMapKeyRef: { name: 'prompts', key: 'fix.md', optional: false } },
      promptOnStdin: true,
      command: ['codex', 'exec', '--full-auto'],
      workingDir: '/',
      env: [
        { name: 'MODE', value: 'fast' },
        { name: 'API_KEY', valueFrom: { secretKeyRef: { name: 'keys', key: 'api' } } },
        { name: '_FROM_CM', valueFrom: { configMapKeyRef: { name: 'cfg', key: 'x.y' } } },
      ],
      nodeSelector: { zone: 'a', 'example.com/gpu': 'true' },
      nodeName: 'node-1',
      activeDeadlineSeconds: 3600,
      idleTimeoutSeconds: 600,
      ttlSecondsAfterFinished: 0,
      cleanup: { keepLogs: false, gracePeriodSeconds: 0 },
      stop: false,
      stopReason: '',
    },
    accept: true,
  },
  { kind: 'create', name: 'prompt at the size limit', spec: goodSpec({ prompt: 'x'.repeat(LIMITS.promptBytes) }), accept: true },
  // Bad specs: both must reject, the server naming the field.
  { kind: 'create', name: 'neither prompt nor promptFrom', spec: without(goodSpec(), 'prompt'), accept: false, field: 'spec.prompt or spec.promptFrom' },
  {
    kind: 'create',
    name: 'both prompt and promptFrom',
    spec: goodSpec({ promptFrom: { secretKeyRef: { name: 's', key: 'k' } } }),
    accept: false,
    field: 'spec.prompt or spec.promptFrom',
  },
  { kind: 'create', name: 'no spec at all', spec: undefined, accept: false, field: 'spec' },
  { kind: 'create', name: 'relative workingDir', spec: goodSpec({ workingDir: 'src/app' }), accept: false, field: 'spec.workingDir' },
  { kind: 'create', name: 'negative activeDeadlineSeconds', spec: goodSpec({ activeDeadlineSeconds: -5 }), accept: false, field: 'spec.activeDeadlineSeconds' },
  { kind: 'create', name: 'fractional idleTimeoutSeconds', spec: goodSpec({ idleTimeoutSeconds: 1.5 }), accept: false, field: 'spec.idleTimeoutSeconds' },
  { kind: 'create', name: 'empty inline prompt', spec: goodSpec({ prompt: '' }), accept: false, field: 'spec.prompt' },
  { kind: 'create', name: 'oversized prompt', spec: goodSpec({ prompt: 'x'.repeat(LIMITS.promptBytes + 1) }), accept: false, field: 'spec.prompt' },
  { kind: 'create', name: 'invalid env name', spec: goodSpec({ env: [{ name: '1ST', value: 'v' }] }), accept: false, field: 'spec.env[0].name' },
  { kind: 'create', name: 'reserved env name', spec: goodSpec({ env: [{ name: 'AGENT_UID', value: 'forged' }] }), accept: false, field: 'spec.env[0].name' },
  {
    kind: 'create',
    name: 'env value and valueFrom',
    spec: goodSpec({ env: [{ name: 'K', value: 'v', valueFrom: { secretKeyRef: { name: 's', key: 'k' } } }] }),
    accept: false,
    field: 'spec.env[0]',
  },
  {
    kind: 'create',
    name: 'env valueFrom with both refs',
    spec: goodSpec({ env: [{ name: 'K', valueFrom: { secretKeyRef: { name: 's', key: 'k' }, configMapKeyRef: { name: 'c', key: 'k' } } }] }),
    accept: false,
    field: 'spec.env[0].valueFrom',
  },
  {
    kind: 'create',
    name: 'duplicate env names',
    spec: goodSpec({
      env: [
        { name: 'K', value: 'a' },
        { name: 'K', value: 'b' },
      ],
    }),
    accept: false,
    field: 'spec.env[1]',
  },
  { kind: 'create', name: 'command as one string', spec: goodSpec({ command: 'claude -p "fix it"' }), accept: false, field: 'spec.command' },
  { kind: 'create', name: 'empty command', spec: goodSpec({ command: [] }), accept: false, field: 'spec.command' },
  { kind: 'create', name: 'empty argument', spec: goodSpec({ command: ['claude', ''] }), accept: false, field: 'spec.command[1]' },
  { kind: 'create', name: 'no command', spec: without(goodSpec(), 'command'), accept: false, field: 'spec.command' },
  { kind: 'create', name: 'unknown field', spec: goodSpec({ promptt: 'typo' }), accept: false, field: 'spec.promptt', zodField: 'promptt' },
  {
    kind: 'create',
    name: 'promptFrom with both refs',
    spec: without(goodSpec({ promptFrom: { configMapKeyRef: { name: 'c', key: 'k' }, secretKeyRef: { name: 's', key: 'k' } } }), 'prompt'),
    accept: false,
    field: 'spec.promptFrom',
  },
  {
    kind: 'create',
    name: 'promptFrom ref without key',
    spec: without(goodSpec({ promptFrom: { configMapKeyRef: { name: 'c' } } }), 'prompt'),
    accept: false,
    field: 'spec.promptFrom.configMapKeyRef.key',
  },
  { kind: 'create', name: 'invalid nodeName', spec: goodSpec({ nodeName: 'Node_1' }), accept: false, field: 'spec.nodeName' },
  { kind: 'create', name: 'grace period too long', spec: goodSpec({ cleanup: { gracePeriodSeconds: 3601 } }), accept: false, field: 'spec.cleanup.gracePeriodSeconds' },
  { kind: 'create', name: 'non-string nodeSelector value', spec: goodSpec({ nodeSelector: { zone: 1 } }), accept: false, field: 'spec.nodeSelector.zone' },
  { kind: 'create', name: 'stop as a string', spec: goodSpec({ stop: 'yes' }), accept: false, field: 'spec.stop' },
  // Status, through the status subresource.
  {
    kind: 'status',
    name: 'good status',
    status: {
      phase: 'Running',
      progress: 50,
      nodeName: 'node-1',
      startTime: '2026-01-02T03:04:05Z',
      conditions: [{ type: 'Scheduled', status: 'True', reason: 'Bound', message: '', lastTransitionTime: '2026-01-02T03:04:05Z' }],
    },
    accept: true,
  },
  { kind: 'status', name: 'progress 101', status: { progress: 101 }, accept: false, field: 'status.progress' },
  { kind: 'status', name: 'unknown phase', status: { phase: 'Sleeping' }, accept: false, field: 'status.phase' },
  { kind: 'status', name: 'startTime not a date-time', status: { startTime: 'yesterday' }, accept: false, field: 'status.startTime' },
  ...[
    ['2026-01-02T03:04:05.123456Z', true],
    ['2026-01-02t03:04:05+01:00', true],
    ['2026-02-30T00:00:00Z', false],
    ['2026-01-02 03:04:05Z', false],
    ['2026-01-02T03:04:05', false],
    ['2026-01-02T24:00:00Z', false],
  ].map(([time, accept]): Case => ({
    kind: 'status',
    name: `startTime ${time}`,
    status: { startTime: time },
    accept: accept as boolean,
    field: 'status.startTime',
  })),
  {
    kind: 'status',
    name: 'condition status not True/False/Unknown',
    status: { conditions: [{ type: 'Scheduled', status: 'Maybe', reason: 'Bound', message: '', lastTransitionTime: '2026-01-02T03:04:05Z' }] },
    accept: false,
    field: 'status.conditions[0].status',
  },
  {
    kind: 'status',
    name: 'two conditions of one type',
    status: {
      conditions: [
        { type: 'Scheduled', status: 'True', reason: 'Bound', message: '', lastTransitionTime: '2026-01-02T03:04:05Z' },
        { type: 'Scheduled', status: 'False', reason: 'Unbound', message: '', lastTransitionTime: '2026-01-02T03:04:06Z' },
      ],
    },
    accept: false,
    field: 'status.conditions[1]',
  },
  { kind: 'status', name: 'unknown status field', status: { phase: 'Running', colour: 'red' }, accept: false, field: 'status.colour', zodField: 'colour' },
  // Spec updates.
  { kind: 'update', name: 'command changed before scheduling', scheduled: false, change: (s) => ({ ...s, command: ['codex'] }), accept: true },
  { kind: 'update', name: 'command changed after scheduling', scheduled: true, change: (s) => ({ ...s, command: ['codex'] }), accept: false, field: 'spec is immutable' },
  { kind: 'update', name: 'env added after scheduling', scheduled: true, change: (s) => ({ ...s, env: [{ name: 'A', value: 'b' }] }), accept: false, field: 'spec is immutable' },
  { kind: 'update', name: 'stop after scheduling', scheduled: true, change: (s) => ({ ...s, stop: true, stopReason: 'not needed' }), accept: true },
  { kind: 'update', name: 'stop reverted to false', scheduled: true, initial: { stop: true }, change: (s) => ({ ...s, stop: false }), accept: false, field: 'spec.stop' },
  { kind: 'update', name: 'stop removed', scheduled: false, initial: { stop: true }, change: (s) => without(s, 'stop'), accept: false, field: 'spec.stop' },
  { kind: 'update', name: 'stopReason changed while stopped', scheduled: true, initial: { stop: true }, change: (s) => ({ ...s, stopReason: 'later' }), accept: true },
];

/** zod's verdict: undefined when it accepts, the issues (naming fields) when it rejects. */
function zodVerdict(obj: Json, old?: Json): string | undefined {
  const parsed = agentSchema.safeParse(obj);
  if (!parsed.success) return formatIssues(parsed.error);
  if (!old) return undefined;
  const oldAgent = agentSchema.parse(old);
  for (const r of transitionRulesOf<typeof parsed.data>(agentSchema)) {
    if (!r.check(parsed.data, oldAgent)) return r.message;
  }
  for (const r of transitionRulesOf<typeof parsed.data.spec>(agentSpec)) {
    if (!r.check(parsed.data.spec, oldAgent.spec)) return r.message;
  }
  return undefined;
}

/** Only what zod validates: the server adds metadata fields (managedFields, ...) it does not model. */
const forZod = (obj: Json): Json => ({ ...obj, metadata: { name: (obj.metadata as Json).name } });

async function verdicts(ns: string, c: Case, name: string): Promise<{ server?: string; zod?: string }> {
  if (c.kind === 'create') {
    const body = agentObject(name, c.spec);
    return { server: await serverVerdict(() => createAgent(ns, body)), zod: zodVerdict(body) };
  }
  if (c.kind === 'status') {
    const created = await createAgent(ns, agentObject(name, goodSpec()));
    return {
      server: await serverVerdict(() => setStatus(ns, name, c.status)),
      zod: zodVerdict(forZod({ ...created, status: c.status })),
    };
  }
  await createAgent(ns, agentObject(name, goodSpec(c.initial)));
  if (c.scheduled) await setStatus(ns, name, { phase: 'Scheduled', nodeName: 'node-1' });
  const old = (await custom().getNamespacedCustomObject({ ...where(ns), name })) as Json;
  const updated = { ...old, spec: c.change(old.spec as Json) };
  return {
    server: await serverVerdict(() => custom().replaceNamespacedCustomObject({ ...where(ns), name, body: updated, fieldValidation: 'Strict' })),
    zod: zodVerdict(forZod(updated), forZod(old)),
  };
}

test('the API server and zod accept and reject the same Agents', async (t) => {
  assert.ok(CASES.filter((c) => !c.accept).length >= 15, 'at least 15 bad Agents');
  const ns = await createTestNamespace(t, 'crd-validation');
  let i = 0;
  for (const c of CASES) {
    const name = `case-${i++}`;
    await t.test(`${c.kind}: ${c.name}`, async () => {
      const { server, zod } = await verdicts(ns, c, name);
      if (c.accept) {
        assert.equal(server, undefined, `the API server should accept: ${server}`);
        assert.equal(zod, undefined, `zod should accept: ${zod}`);
      } else {
        assert.ok(server !== undefined, 'the API server should reject');
        assert.ok(server.includes(c.field!), `the API server's message should name ${c.field}: ${server}`);
        assert.ok(zod !== undefined, `zod should reject, as the API server did: ${server}`);
        if (c.kind !== 'update') {
          const zodField = c.zodField ?? c.field!;
          assert.ok(zod.includes(zodField), `zod's message should name ${zodField}: ${zod}`);
        }
      }
    });
  }
});
