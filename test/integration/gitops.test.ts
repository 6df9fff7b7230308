/**
 * What GitOps tools see of Agents on the real stack: kstatus (the real cli-utils library, as Flux
 * and kpt compute it) and the shipped Argo CD health check (deploy/gitops/argocd-health.lua, in a
 * real Lua 5.1) give the right answer in every phase, also while active and before the controller
 * first acted; the admission Warning for a GitOps-tracked Agent with a TTL; and the README's
 * GitOps example waited for as the README says.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { pino } from 'pino';
import { stringify } from 'yaml';
import { PACKAGE_ROOT } from '../../src/dev/paths.js';
import { computeKstatus, ensureKstatus, type KstatusStatus } from '../../src/dev/kstatus.js';
import { argoHealth, type ArgoHealthStatus } from '../support/argoHealth.js';
import { createTestNamespace, kubectl, waitFor } from '../support/cluster.js';
import { agentManifest, type AgentObj, createAgent, patchSpec, useStack, waitForAgent, waitForCleanedUp } from '../support/stack.js';

const NODE = 'gitops-node-1';
const CAPACITY = 4;
const EXAMPLE_DIR = join(PACKAGE_ROOT, 'examples', 'gitops', 'agents');

let kstatusBinary = '';

/** The Agent as a GitOps tool reads it from the API server. */
async function getAgent(ns: string, name: string): Promise<AgentObj> {
  const r = await kubectl(['get', 'agent', '-n', ns, name, '-o', 'json']);
  assert.equal(r.exitCode, 0, r.stderr);
  return JSON.parse(r.stdout) as AgentObj;
}

interface Verdicts {
  kstatus: { status: KstatusStatus; message: string };
  argo: { status: ArgoHealthStatus; message: string };
}

async function judge(agent: AgentObj): Promise<Verdicts> {
  const [k] = await computeKstatus(kstatusBinary, [agent]);
  assert.ok(k, 'kstatus printed nothing');
  return { kstatus: { status: k.status, message: k.message }, argo: await argoHealth(agent) };
}

interface Expect {
  kstatus: [KstatusStatus, RegExp];
  argo: [ArgoHealthStatus, RegExp];
}

function assertVerdicts(name: string, got: Verdicts, want: Expect): void {
  assert.equal(got.kstatus.status, want.kstatus[0], `${name}: kstatus says ${got.kstatus.status} (${got.kstatus.message})`);
  assert.match(got.kstatus.message, want.kstatus[1], `${name}: kstatus message`);
  assert.equal(got.argo.status, want.argo[0], `${name}: Argo CD health ${got.argo.status} (${got.argo.message})`);
  assert.match(got.argo.message, want.argo[1], `${name}: Argo CD message`);
}

/** status.observedGeneration and every condition's observedGeneration are the object's generation. */
function assertObserved(a: AgentObj): void {
  const g = a.metadata?.generation;
  assert.equal(a.status?.observedGeneration, g, `${a.metadata?.name}: status.observedGeneration`);
  for (const c of a.status?.conditions ?? []) assert.equal(c.observedGeneration, g, `${a.metadata?.name}: condition ${c.type}`);
}

/** The node recorded its cleanup and the controller acted on it (its CleanedUp condition): what kstatus and Argo CD judge is then final. */
const controllerSawCleanup = (a: AgentObj) => !!a.status?.cleanup?.completionTime && !!a.status.conditions?.some((c) => c.type === 'CleanedUp' && c.status === 'True');

const isActive = (phase: string) => (a: AgentObj) => a.status?.phase === phase;

describe('GitOps: kstatus, the Argo CD health check, the TTL warning', () => {
  const stack = useStack('gitops', { nodes: [NODE], capacity: CAPACITY });

  before(async () => {
    // Built once per cli-utils version into the cache (seconds warm; module downloads when cold).
    kstatusBinary = await ensureKstatus({ logger: pino({ level: process.env.LOG_LEVEL ?? 'warn' }, pino.destination(2)) });
  });

  it('before the controller acts: InProgress and Progressing, not Current (the schema defaults observedGeneration to 0)', async (t) => {
    const ns = await createTestNamespace(t, 'gitops-fresh');
    const controller = stack().controllerComponents[0]!;
    await stack().stopComponent(controller.name, 'graceful');
    try {
      await createAgent(ns, 'fresh', { command: ['true'] });
      const a = await getAgent(ns, 'fresh');
      assert.deepEqual(a.status, { observedGeneration: 0 });
      assertVerdicts('fresh', await judge(a), {
        kstatus: ['InProgress', /^Agent generation is 1, but latest observed generation is 0$/],
        argo: ['Progressing', /^Waiting for the agent-operator controller to observe generation 1$/],
      });
    } finally {
      await stack().startComponent(controller.name);
    }
    // The verdict is the controller's: judged once it has acted on the node's cleanup record.
    const done = await waitForAgent(ns, 'fresh', controllerSawCleanup, 'to be cleaned up, as the controller records it', 90_000);
    assertVerdicts('fresh, finished', await judge(done), { kstatus: ['Current', /Resource is Ready/], argo: ['Healthy', /^Completed \(Exited\)/] });
  });

  it('each way an Agent ends: Current/Healthy only when completed and cleaned up; Failed/Degraded with the reason otherwise', async (t) => {
    const ns = await createTestNamespace(t, 'gitops-ends');
    const cases: { name: string; spec: Partial<AgentObj['spec']>; settled: (a: AgentObj) => boolean; want: Expect }[] = [
      {
        name: 'completed',
        spec: { command: ['sh', '-c', 'agent-operator report --status completed --message "all tests pass"'] },
        settled: controllerSawCleanup,
        want: { kstatus: ['Current', /Resource is Ready/], argo: ['Healthy', /^Completed \(AgentCompleted\): all tests pass$/] },
      },
      {
        name: 'failed',
        spec: { command: ['sh', '-c', 'exit 3'] },
        settled: controllerSawCleanup,
        want: { kstatus: ['Failed', /^the command exited with code 3$/], argo: ['Degraded', /^Failed \(ExitedNonZero\): the command exited with code 3$/] },
      },
      {
        name: 'errored',
        spec: { command: ['gitops-no-such-binary'] },
        settled: controllerSawCleanup,
        want: { kstatus: ['Failed', /^command not found: gitops-no-such-binary/], argo: ['Degraded', /^Error \(LaunchFailed\): command not found: gitops-no-such-binary/] },
      },
      {
        name: 'unschedulable',
        spec: { nodeSelector: { 'gitops.test/pool': 'none' }, command: ['true'] },
        settled: (a) => a.status?.reason === 'Unschedulable',
        want: {
          kstatus: ['Failed', /^0\/\d+ nodes are available: \d+ didn't match nodeSelector/],
          argo: ['Degraded', /^Pending \(Unschedulable\): 0\/\d+ nodes are available/],
        },
      },
    ];
    for (const c of cases) await createAgent(ns, c.name, c.spec);
    for (const c of cases) {
      const a = await waitForAgent(ns, c.name, c.settled, 'to settle', 90_000);
      const fresh = await getAgent(ns, c.name);
      assertObserved(fresh);
      assertVerdicts(c.name, await judge(fresh), c.want);
      assert.equal(a.metadata?.uid, fresh.metadata?.uid);
    }
  });

  it('while active (Running, Working, Blocked, queued for a slot): InProgress and Progressing; a stop makes it Failed and Degraded', async (t) => {
    const ns = await createTestNamespace(t, 'gitops-active');
    const sleep = 'sleep 300';
    const active: { name: string; command: string; phase: string; want: Expect }[] = [
      {
        name: 'running',
        command: sleep,
        phase: 'Running',
        want: { kstatus: ['InProgress', /^session \S+ started$/], argo: ['Progressing', /^Running \(SessionStarted\): session \S+ started$/] },
      },
      {
        name: 'working',
        command: `agent-operator report --status working --progress 30 --message "reading the diff"; ${sleep}`,
        phase: 'Working',
        want: { kstatus: ['InProgress', /^reading the diff$/], argo: ['Progressing', /^Working \(AgentWorking\): reading the diff$/] },
      },
      {
        name: 'blocked',
        command: `agent-operator report --status blocked --message "needs a reviewer"; ${sleep}`,
        phase: 'Blocked',
        want: { kstatus: ['InProgress', /^needs a reviewer$/], argo: ['Progressing', /^Blocked \(AgentBlocked\): needs a reviewer$/] },
      },
      {
        name: 'blocker',
        command: sleep,
        phase: 'Running',
        want: { kstatus: ['InProgress', /started/], argo: ['Progressing', /^Running/] },
      },
    ];
    assert.equal(active.length, CAPACITY, 'the active Agents fill the node');
    for (const c of active) await createAgent(ns, c.name, { command: ['sh', '-c', c.command], cleanup: { gracePeriodSeconds: 1 } });
    for (const c of active) {
      await waitForAgent(ns, c.name, isActive(c.phase), `to be ${c.phase}`);
      const a = await getAgent(ns, c.name);
      assertObserved(a);
      assertVerdicts(c.name, await judge(a), c.want);
    }

    // The node is full: the next one waits for a slot, which is a queue, not a stall.
    await createAgent(ns, 'queued', { command: ['true'] });
    await waitForAgent(ns, 'queued', (a) => a.status?.reason === 'Unschedulable', 'to wait for a slot');
    assertVerdicts('queued', await judge(await getAgent(ns, 'queued')), {
      kstatus: ['InProgress', /^0\/1 nodes are available: 1 at capacity$/],
      argo: ['Progressing', /^Pending \(Unschedulable\): 0\/1 nodes are available: 1 at capacity$/],
    });

    // Stopped (generation 2): Terminated is a stall; its slot goes to the queued Agent, which completes.
    await patchSpec(ns, 'blocker', { stop: true, stopReason: 'superseded by a newer run' });
    await waitForAgent(ns, 'blocker', controllerSawCleanup, 'to be cleaned up, as the controller records it', 90_000);
    const stopped = await getAgent(ns, 'blocker');
    assert.equal(stopped.metadata?.generation, 2);
    assertObserved(stopped);
    assertVerdicts('stopped', await judge(stopped), {
      kstatus: ['Failed', /^superseded by a newer run$/],
      argo: ['Degraded', /^Terminated \(Stopped\): superseded by a newer run$/],
    });
    await waitForAgent(ns, 'queued', controllerSawCleanup, 'to be cleaned up, as the controller records it', 90_000);
    assertVerdicts('queued, then run', await judge(await getAgent(ns, 'queued')), { kstatus: ['Current', /Ready/], argo: ['Healthy', /^Completed \(Exited\)/] });

    for (const c of active.filter((c) => c.name !== 'blocker')) await patchSpec(ns, c.name, { stop: true });
    for (const c of active) await waitForCleanedUp(ns, c.name);
  });

  it('a GitOps-tracked Agent with ttlSecondsAfterFinished: kubectl apply prints the Warning and creates it; otherwise no warning', async (t) => {
    const ns = await createTestNamespace(t, 'gitops-ttl');
    // Kept Pending (no node matches) so nothing runs: admission is what is tested here.
    const base = { nodeSelector: { 'gitops.test/pool': 'none' }, command: ['true'] };
    const cases: { name: string; labels?: Record<string, string>; annotations?: Record<string, string>; ttl?: number; warns?: string }[] = [
      { name: 'argo-label', labels: { 'app.kubernetes.io/instance': 'agents' }, ttl: 60, warns: 'app.kubernetes.io/instance' },
      { name: 'argo-annotation', annotations: { 'argocd.argoproj.io/tracking-id': 'agents:orchestrator.dev/Agent:x/argo-annotation' }, ttl: 0, warns: 'argocd.argoproj.io/tracking-id' },
      { name: 'flux-kustomize', labels: { 'kustomize.toolkit.fluxcd.io/name': 'agents', 'kustomize.toolkit.fluxcd.io/namespace': 'flux-system' }, ttl: 60, warns: 'kustomize.toolkit.fluxcd.io/name' },
      { name: 'flux-helm', labels: { 'helm.toolkit.fluxcd.io/name': 'agents' }, ttl: 60, warns: 'helm.toolkit.fluxcd.io/name' },
      { name: 'untracked-ttl', ttl: 60 },
      { name: 'tracked-no-ttl', labels: { 'kustomize.toolkit.fluxcd.io/name': 'agents' } },
    ];
    const manifest = (c: (typeof cases)[number]) => {
      const m = agentManifest(ns, c.name, { ...base, ...(c.ttl !== undefined ? { ttlSecondsAfterFinished: c.ttl } : {}) });
      m.metadata = { ...m.metadata, ...(c.labels ? { labels: c.labels } : {}), ...(c.annotations ? { annotations: c.annotations } : {}) };
      return stringify(m);
    };
    // The stack installed the policy from deploy/ at start; the API server picks it up within moments.
    await waitFor(async () => /Warning: .*agent-operator-gitops-ttl/.test((await kubectl(['apply', '--dry-run=server', '-f', '-'], { input: manifest(cases[0]!) })).stderr), {
      timeoutMs: 30_000,
      what: 'the ValidatingAdmissionPolicy to take effect',
    });
    for (const c of cases) {
      const r = await kubectl(['apply', '-f', '-'], { input: manifest(c) });
      assert.equal(r.exitCode, 0, `${c.name}: ${r.stderr}`);
      assert.match(r.stdout, new RegExp(`agent.orchestrator.dev/${c.name} created`), `${c.name} is created all the same`);
      if (c.warns) {
        assert.match(r.stderr, /^Warning: Validation failed for ValidatingAdmissionPolicy 'agent-operator-gitops-ttl'/m, c.name);
        assert.ok(r.stderr.includes(`(${c.warns})`) || r.stderr.includes(`${c.warns},`) || r.stderr.includes(`, ${c.warns}`), `${c.name}: the warning names ${c.warns}:\n${r.stderr}`);
        assert.match(r.stderr, new RegExp(`deleted ${c.ttl}s after it finishes, the tool then re-creates it from git`), c.name);
        assert.match(r.stderr, /Remove ttlSecondsAfterFinished/, c.name);
      } else {
        assert.equal(r.stderr, '', `${c.name}: no warning`);
      }
    }
    for (const c of cases) await getAgent(ns, c.name);
  });

  it("the README's GitOps example: applied with kustomize as Argo CD and Flux do, `kubectl wait --for=condition=Ready` returns once it is done and cleaned up", async (t) => {
    const ns = await createTestNamespace(t, 'gitops-example');
    const readme = await readFile(join(PACKAGE_ROOT, 'README.md'), 'utf8');
    for (const f of ['kustomization.yaml', 'dependency-review.yaml']) {
      const text = (await readFile(join(EXAMPLE_DIR, f), 'utf8'))
        .split('\n')
        .filter((l) => !l.startsWith('#'))
        .join('\n')
        .trim();
      assert.ok(readme.includes(text), `README.md shows examples/gitops/agents/${f} as it is`);
    }
    const applied = await kubectl(['apply', '-k', EXAMPLE_DIR, '-n', ns]);
    assert.equal(applied.exitCode, 0, applied.stderr);
    assert.equal(applied.stderr, '', 'no admission warning: the example has no TTL');
    const waited = await kubectl(['wait', '--for=condition=Ready', 'agent/dependency-review', '-n', ns, '--timeout=120s'], { timeoutMs: 130_000 });
    assert.equal(waited.exitCode, 0, waited.stderr);
    const a = await getAgent(ns, 'dependency-review');
    assert.equal(a.status?.phase, 'Completed');
    assert.ok(a.status?.cleanup?.completionTime, 'Ready only after the cleanup record');
    assertVerdicts('example', await judge(a), { kstatus: ['Current', /Ready/], argo: ['Healthy', /^Completed \(AgentCompleted\): no risky updates$/] });
  });
});
