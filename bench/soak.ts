/**
 * `npm run soak -- --agents N`: N Agents of mixed kinds on a local stack (own control plane, 2
 * simulated nodes), with the controller, one sidecar and the kube-apiserver each SIGKILLed once
 * mid-run and restarted with the same command line, as a kubelet or `supervise` would. At the end
 * every Agent must be in the phase its kind implies, with a cleanup record, and nothing may be left
 * on the nodes (no session, workspace or agent process). Prints figures as JSON; exits 1 on any
 * miss, naming each.
 *
 * Kinds, in turn: reports completion (retrying while its sidecar is down), exits 0, exits 3, runs
 * until stopped (spec.stop), runs past activeDeadlineSeconds.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import type { Agent } from '../src/api/agent.js';
import { isTerminalPhase } from '../src/api/phase.js';
import { Stack, type Component } from '../src/dev/stack.js';
import { closeConnections, loadKubeConfig } from '../src/kube/client.js';
import { agentClient, type KubeObject } from '../src/kube/resources.js';
import { listSessions } from '../src/sidecar/runtime/observe.js';
import { groupByAgent, listProcesses } from '../src/sidecar/runtime/procfs.js';
import { listWorkspaces } from '../src/sidecar/runtime/workspace.js';

type AgentObj = Agent & KubeObject;

interface Kind {
  name: string;
  spec: (i: number) => Partial<Agent['spec']>;
  expect: { phase: string; reason: string };
}

const KINDS: Kind[] = [
  {
    name: 'reports',
    spec: (i) => ({ command: ['sh', '-c', `sleep ${1 + (i % 4)}; until agent-operator report --status completed --message done; do sleep 1; done; sleep 600`] }),
    expect: { phase: 'Completed', reason: 'AgentCompleted' },
  },
  { name: 'exits0', spec: (i) => ({ command: ['sh', '-c', `echo hello; sleep ${1 + (i % 5)}; exit 0`] }), expect: { phase: 'Completed', reason: 'Exited' } },
  { name: 'exits3', spec: (i) => ({ command: ['sh', '-c', `echo failing; sleep ${1 + (i % 5)}; exit 3`] }), expect: { phase: 'Failed', reason: 'ExitedNonZero' } },
  { name: 'stopped', spec: () => ({ command: ['sleep', '600'], cleanup: { gracePeriodSeconds: 2 } }), expect: { phase: 'Terminated', reason: 'Stopped' } },
  { name: 'deadline', spec: (i) => ({ command: ['sleep', '600'], activeDeadlineSeconds: 3 + (i % 4) }), expect: { phase: 'Terminated', reason: 'DeadlineExceeded' } },
];

const NS = 'soak';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function stats(values: number[]): { n: number; medianMs: number; p90Ms: number; worstMs: number } {
  const v = [...values].sort((a, b) => a - b);
  const at = (q: number) => v[Math.min(v.length - 1, Math.floor(q * v.length))] ?? NaN;
  return { n: v.length, medianMs: Math.round(at(0.5)), p90Ms: Math.round(at(0.9)), worstMs: Math.round(v[v.length - 1] ?? NaN) };
}

async function metricSum(c: Component, name: string): Promise<number | undefined> {
  try {
    const text = await (await fetch(`${c.metricsUrl}/metrics`, { signal: AbortSignal.timeout(5000) })).text();
    return text
      .split('\n')
      .filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `))
      .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
  } catch {
    return undefined;
  }
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      agents: { type: 'string', default: '100' },
      capacity: { type: 'string', default: '8' },
      'timeout-minutes': { type: 'string', default: '30' },
      'keep-state': { type: 'boolean', default: false },
    },
    strict: true,
  });
  const n = Number(values.agents);
  const capacity = Number(values.capacity);
  const timeoutMs = Number(values['timeout-minutes']) * 60_000;
  if (!Number.isInteger(n) || n < KINDS.length) throw new Error(`--agents: expected a whole number of at least ${KINDS.length}, got ${values.agents}`);
  if (!Number.isInteger(capacity) || capacity < 1) throw new Error(`--capacity: expected a whole number of at least 1, got ${values.capacity}`);
  if (!(timeoutMs > 0)) throw new Error(`--timeout-minutes: expected a positive number, got ${values['timeout-minutes']}`);

  const dir = await mkdtemp(join(tmpdir(), 'agent-operator-soak-'));
  const log = pino({ level: 'info' }, pino.destination(2));
  const t0 = Date.now();
  const stack = await Stack.start({ stateDir: dir, logger: pino({ level: 'warn' }, pino.destination(2)), nodes: 2, capacity, heartbeatGraceSeconds: 40, nodeLostGraceSeconds: 120 });
  const kc = loadKubeConfig(stack.controlPlane.kubeconfigPath);
  const api = agentClient(kc);
  const misses: string[] = [];
  try {
    await stack.controlPlane.kubectl(['create', 'namespace', NS]);
    const kindOf = new Map<string, Kind>();
    const created = new Map<string, number>();
    const running = new Map<string, number>();
    const cleaned = new Map<string, number>();
    for (let i = 0; i < n; i++) {
      const kind = KINDS[i % KINDS.length]!;
      const name = `${kind.name}-${i}`;
      kindOf.set(name, kind);
      created.set(name, Date.now());
      await api.create({ apiVersion: 'orchestrator.dev/v1alpha1', kind: 'Agent', metadata: { name, namespace: NS }, spec: { prompt: `soak ${name}`, command: ['true'], ...kind.spec(i) } });
    }
    log.info({ agents: n, ms: Date.now() - t0 }, 'applied');

    // Each crash once, when that share of the Agents is done; each restart a moment later.
    const sidecar = stack.nodes[0]!;
    const crashes: { at: number; what: string; done: boolean; downMs?: number; atAgentsDone?: number }[] = [
      { at: 0.2, what: 'controller', done: false },
      { at: 0.45, what: sidecar.name, done: false },
      { at: 0.7, what: 'kube-apiserver', done: false },
    ];
    const crash = async (what: string) => {
      const started = Date.now();
      if (what === 'kube-apiserver') {
        if (!('crashApiServer' in stack.controlPlane)) throw new Error('the stack does not own its control plane');
        await (stack.controlPlane as { crashApiServer(): Promise<void> }).crashApiServer();
      } else {
        const name = what === 'controller' ? stack.controllerComponents[0]!.name : what;
        await stack.stopComponent(name, 'kill');
        await sleep(1000);
        await stack.startComponent(name);
      }
      return Date.now() - started;
    };

    const deadline = Date.now() + timeoutMs;
    let last: AgentObj[] = [];
    for (;;) {
      let items: AgentObj[];
      try {
        items = (await api.list({ namespace: NS })).items;
      } catch {
        await sleep(500); // the API server is down: the soak carries on when it is back
        continue;
      }
      last = items;
      const now = Date.now();
      for (const a of items) {
        const name = a.metadata!.name!;
        const phase = a.status?.phase ?? '';
        if (!running.has(name) && (['Running', 'Working', 'Blocked'].includes(phase) || (isTerminalPhase(phase) && a.status?.startTime))) running.set(name, now);
        if (!cleaned.has(name) && a.status?.cleanup?.completionTime) cleaned.set(name, now);
        if (kindOf.get(name)?.name === 'stopped' && phase === 'Running' && !a.spec.stop) {
          await api.patch({ namespace: NS, name }, { spec: { stop: true, stopReason: 'stopped by the soak' } }).catch(() => undefined);
        }
      }
      const done = items.filter((a) => isTerminalPhase(a.status?.phase) && a.status?.cleanup?.completionTime).length;
      const next = crashes.find((c) => !c.done);
      if (next && done >= next.at * n) {
        next.done = true;
        next.atAgentsDone = done;
        log.info({ crash: next.what, agentsDone: done }, 'SIGKILL and restart');
        next.downMs = await crash(next.what);
      }
      if (done === n && !next) break;
      if (now > deadline) {
        misses.push(`only ${done} of ${n} Agents finished and were cleaned up within ${values['timeout-minutes']} minutes`);
        break;
      }
      await sleep(500);
    }

    const phases: Record<string, number> = {};
    for (const a of last) {
      const name = a.metadata!.name!;
      const want = kindOf.get(name)!.expect;
      const s = a.status ?? {};
      phases[`${s.phase}/${s.reason}`] = (phases[`${s.phase}/${s.reason}`] ?? 0) + 1;
      if (s.phase !== want.phase || s.reason !== want.reason) {
        // When and where, to set beside the components' logs (and anything else the machine ran then).
        const when = `on ${s.nodeName ?? 'no node'}, scheduled ${s.scheduledTime ?? '-'}, started ${s.startTime ?? '-'}, finished ${s.completionTime ?? '-'}, cleanup trigger ${s.cleanup?.trigger ?? '-'}`;
        misses.push(`${name}: ${s.phase}/${s.reason} (${s.message ?? ''}), expected ${want.phase}/${want.reason}; ${when}`);
      }
      if (!s.cleanup?.completionTime) misses.push(`${name}: no cleanup record`);
      else {
        if (!s.cleanup.verifiedNoProcesses) misses.push(`${name}: cleanup did not verify that no process remained`);
        if (s.cleanup.errors?.length) misses.push(`${name}: cleanup errors: ${s.cleanup.errors.join('; ')}`);
        if (s.startTime && !s.cleanup.logsArchived) misses.push(`${name}: logs not archived`);
      }
    }
    for (const node of stack.nodes) {
      const sessions = await listSessions(node.root);
      const workspaces = await listWorkspaces(node.root);
      const procs = groupByAgent(await listProcesses(), node.root);
      if (sessions.length) misses.push(`${node.name}: ${sessions.length} session(s) left`);
      if (workspaces.length) misses.push(`${node.name}: ${workspaces.length} workspace(s) left`);
      if (procs.size) misses.push(`${node.name}: processes of ${procs.size} agent(s) left`);
    }
    const resumes = await Promise.all(
      stack.nodes.map(async (nd) => ({
        node: nd.name,
        launchResumes: await metricSum(nd, 'agent_operator_launch_resumes_total'),
        unfinished: await metricSum(nd, 'agent_operator_launches_unfinished'),
      })),
    );
    const span = (m: Map<string, number>) => stats([...m].map(([name, t]) => t - created.get(name)!));
    console.log(
      JSON.stringify(
        {
          machine: { cores: cpus().length, node: process.version },
          agents: n,
          nodes: stack.nodes.length,
          capacityPerNode: capacity,
          seconds: Math.round((Date.now() - t0) / 100) / 10,
          crashes: crashes.map(({ what, atAgentsDone, downMs }) => ({ sigkilled: what, atAgentsDone, restartedAfterMs: downMs })),
          phases,
          applyToRunning: span(running),
          applyToCleanupRecord: span(cleaned),
          sidecars: resumes,
          misses: misses.length,
        },
        null,
        2,
      ),
    );
    for (const m of misses) console.error(`MISS ${m}`);
    return misses.length === 0 ? 0 : 1;
  } finally {
    closeConnections(kc);
    await stack.stop();
    if (!values['keep-state']) await rm(dir, { recursive: true, force: true });
    else log.info({ dir }, 'state kept');
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
