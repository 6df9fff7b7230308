/**
 * `npm run bench`: lifecycle latency and footprint on a local stack (own control plane, 2 simulated
 * nodes), printed as JSON. Each agent prints the wall clock just before it exits; the watcher records
 * when it first saw each Agent Running and when it saw the cleanup record (same machine, same clock).
 *
 *   apply→running: Agent create call → phase Running/Working seen by a watch
 *   end→cleanup:   the agent's last output (its exit) → status.cleanup seen by a watch
 *   steady state:  CPU the sidecars use while agents run (the dev stack relists every 500 ms)
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import type { Agent } from '../src/api/agent.js';
import { Stack } from '../src/dev/stack.js';
import { closeConnections, loadKubeConfig } from '../src/kube/client.js';
import { Informer } from '../src/kube/informer.js';
import { AGENT_RESOURCE, agentClient, type KubeObject } from '../src/kube/resources.js';

type AgentObj = Agent & KubeObject;

interface Sample {
  created: number;
  running?: number;
  cleaned?: number;
  ended?: number;
}

function stats(values: number[]): { n: number; medianMs: number; p90Ms: number; worstMs: number } {
  const v = [...values].sort((a, b) => a - b);
  const at = (q: number) => v[Math.min(v.length - 1, Math.floor(q * v.length))] ?? NaN;
  return { n: v.length, medianMs: Math.round(at(0.5)), p90Ms: Math.round(at(0.9)), worstMs: Math.round(v[v.length - 1] ?? NaN) };
}

async function rssKiB(pid: number | undefined): Promise<number | undefined> {
  if (!pid) return undefined;
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  const m = /VmRSS:\s+(\d+)/.exec(status);
  return m ? Number(m[1]) : undefined;
}

/** CPU time (ms) a process and the children it waited for have used: utime+stime+cutime+cstime. */
async function cpuMs(pid: number | undefined): Promise<number> {
  const stat = pid ? await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '') : '';
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = [11, 12, 13, 14].reduce((sum, i) => sum + Number(f[i] ?? 0), 0);
  return (ticks * 1000) / 100; // USER_HZ is 100 on Linux
}

/**
 * What keeping agents running costs the nodes: `count` agents that print now and then, and the
 * sidecars' CPU over `seconds` once all run (the relist, heartbeats, output tracking).
 */
async function steadyState(stack: Stack, ns: string, count: number, seconds: number) {
  const kc = loadKubeConfig(stack.controlPlane.kubeconfigPath);
  const api = agentClient(kc);
  const names = Array.from({ length: count }, (_, i) => `bench-steady-${i}`);
  await Promise.all(
    names.map((name) =>
      api.create({
        apiVersion: 'orchestrator.dev/v1alpha1',
        kind: 'Agent',
        metadata: { name, namespace: ns },
        spec: { prompt: 'bench', command: ['sh', '-c', 'while :; do echo tick; sleep 2; done'], cleanup: { gracePeriodSeconds: 1 } },
      } as AgentObj),
    ),
  );
  const deadline = Date.now() + 60_000;
  while ((await api.list({ namespace: ns })).items.filter((a) => names.includes(a.metadata?.name ?? '') && a.status?.phase === 'Running').length < count) {
    if (Date.now() > deadline) throw new Error(`${count} agents not Running within 60 s`);
    await new Promise((r) => setTimeout(r, 200));
  }
  const pids = stack.nodes.map((n) => n.process()?.pid);
  const sum = async () => (await Promise.all(pids.map(cpuMs))).reduce((a, b) => a + b, 0);
  const before = await sum();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const used = (await sum()) - before;
  await Promise.all(names.map((name) => api.delete({ namespace: ns, name })));
  closeConnections(kc);
  return { agents: count, seconds, sidecarsCpuMs: Math.round(used), sidecarsCpuPercentOfOneCore: Math.round((used / (seconds * 1000)) * 1000) / 10 };
}

async function runBatch(stack: Stack, ns: string, count: number, concurrent: boolean): Promise<Map<string, Sample>> {
  const kc = loadKubeConfig(stack.controlPlane.kubeconfigPath);
  const api = agentClient(kc);
  const samples = new Map<string, Sample>();
  const informer = new Informer<AgentObj>(kc, { resource: AGENT_RESOURCE, namespace: ns, logger: pino({ level: 'warn' }) });
  const seen = (a: AgentObj) => {
    const s = samples.get(a.metadata?.name ?? '');
    if (!s) return;
    const now = Date.now();
    if (!s.running && ['Running', 'Working', 'Completed'].includes(a.status?.phase ?? '')) s.running = now;
    if (!s.cleaned && a.status?.cleanup?.completionTime) s.cleaned = now;
  };
  informer.onAdd(seen).onUpdate((_, a) => seen(a));
  informer.start();
  await informer.waitForSync(30_000);
  const one = async (i: number) => {
    const name = `bench-${concurrent ? 'c' : 's'}-${i}`;
    samples.set(name, { created: Date.now() });
    await api.create({
      apiVersion: 'orchestrator.dev/v1alpha1',
      kind: 'Agent',
      metadata: { name, namespace: ns },
      spec: { prompt: 'bench', command: ['sh', '-c', 'sleep 1; date +END%s%3N'] },
    } as AgentObj);
    const deadline = Date.now() + 120_000;
    while (!samples.get(name)!.cleaned) {
      if (Date.now() > deadline) throw new Error(`${name} not cleaned up within 120 s`);
      await new Promise((r) => setTimeout(r, 20));
    }
    const a = await api.get({ namespace: ns, name });
    const out = await readFile(join(a.status!.cleanup!.archivePath!, 'output.log'), 'utf8');
    const m = /END(\d+)/.exec(out);
    if (m) samples.get(name)!.ended = Number(m[1]);
  };
  if (concurrent) await Promise.all(Array.from({ length: count }, (_, i) => one(i)));
  else for (let i = 0; i < count; i++) await one(i);
  await informer.stop();
  closeConnections(kc);
  return samples;
}

function summarize(samples: Map<string, Sample>) {
  const s = [...samples.values()];
  return {
    applyToRunning: stats(s.filter((x) => x.running).map((x) => x.running! - x.created)),
    endToCleanupRecord: stats(s.filter((x) => x.ended && x.cleaned).map((x) => x.cleaned! - x.ended!)),
    applyToCleanupRecord: stats(s.filter((x) => x.cleaned).map((x) => x.cleaned! - x.created)),
  };
}

async function main(): Promise<void> {
  const concurrent = Number(process.env.BENCH_CONCURRENT ?? 10);
  const sequential = Number(process.env.BENCH_SEQUENTIAL ?? 20);
  const dir = await mkdtemp(join(tmpdir(), 'agent-operator-bench-'));
  const stack = await Stack.start({ stateDir: dir, logger: pino({ level: 'warn' }), nodes: 2, capacity: Math.max(5, Math.ceil(concurrent / 2)) });
  try {
    await stack.controlPlane.kubectl(['create', 'namespace', 'bench']);
    const c = await runBatch(stack, 'bench', concurrent, true);
    const t0 = Date.now();
    const s = await runBatch(stack, 'bench', sequential, false);
    const seqSeconds = (Date.now() - t0) / 1000;
    const steady = await steadyState(stack, 'bench', concurrent, Number(process.env.BENCH_STEADY_SECONDS ?? 20));
    const result = {
      machine: { cores: (await import('node:os')).cpus().length, node: process.version },
      method: 'client create → watch sees phase Running; agent prints its clock just before exiting → watch sees status.cleanup',
      concurrent: { agents: concurrent, ...summarize(c) },
      sequential: { agents: sequential, seconds: Math.round(seqSeconds * 10) / 10, agentsPerMinute: Math.round((sequential / seqSeconds) * 600) / 10, ...summarize(s) },
      steadyState: steady,
      rssKiB: {
        controller: await rssKiB(stack.controllerComponents[0]?.process()?.pid),
        sidecars: await Promise.all(stack.nodes.map(async (n) => ({ node: n.name, rss: await rssKiB(n.process()?.pid) }))),
      },
    };
    console.log(JSON.stringify(result, null, 2));
  } finally {
    await stack.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
