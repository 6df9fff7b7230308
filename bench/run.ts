/**
 * `npm run bench`: lifecycle latency and footprint on a local stack (own control plane, 2 simulated
 * nodes), next to the floor measured in the same run on the same machine, as a table (`-- --json`:
 * the figures as JSON on stdout, the table on stderr). Each agent prints the wall clock just before it exits; the watcher records
 * when it first saw each Agent Running and when it saw the cleanup record (same machine, same clock).
 *
 *   floor:         a bare create -> watch round trip (a ConfigMap, against the same kube-apiserver)
 *                  plus a bare `tmux new-session -d` (a server already running, as on a node):
 *                  what no launch can go below
 *   apply→running: Agent create call → phase Running/Working seen by a watch
 *   end→cleanup:   the agent's last output (its exit) → status.cleanup seen by a watch
 *   sandbox cost:  spawning `true` through the cgroup join, setpriv and bwrap minus spawning `true`
 *   spawns:        the sidecars' agent_operator_node_process_spawns_total{op} over a batch, per agent
 *   steady state:  CPU the sidecars use while agents run (the dev stack relists every 500 ms)
 */
import { randomUUID } from 'node:crypto';
import { chmod, chown, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { CoreV1Api, type V1ConfigMap } from '@kubernetes/client-node';
import { execa } from 'execa';
import { pino } from 'pino';
import type { Agent } from '../src/api/agent.js';
import { PACKAGE_ROOT } from '../src/dev/paths.js';
import { Stack } from '../src/dev/stack.js';
import { closeConnections, loadKubeConfig } from '../src/kube/client.js';
import { Informer } from '../src/kube/informer.js';
import { AGENT_RESOURCE, agentClient, type KubeObject, type ResourceKind } from '../src/kube/resources.js';
import { agentCgroupDir, leafOf, removeAgentCgroups } from '../src/sidecar/runtime/cgroup.js';
import { joinCgroupArgv, nodeSandbox, sandboxArgv } from '../src/sidecar/runtime/sandbox.js';
import { SPAWN_OPS, type SpawnOp } from '../src/sidecar/runtime/spawn.js';
import { DEFAULT_UID_RANGE, parseUidRange } from '../src/sidecar/runtime/uids.js';
import { metricValue, scrape } from '../test/support/telemetry.js';

type AgentObj = Agent & KubeObject;

const CONFIG_MAP_RESOURCE: ResourceKind = { group: '', version: 'v1', plural: 'configmaps', kind: 'ConfigMap', namespaced: true };
const COMMAND_TIMEOUT_MS = 10_000;

interface Sample {
  created: number;
  running?: number;
  cleaned?: number;
  ended?: number;
}

interface Stats {
  n: number;
  medianMs: number;
  p90Ms: number;
  worstMs: number;
}

function stats(values: number[]): Stats {
  const v = [...values].sort((a, b) => a - b);
  const at = (q: number) => v[Math.min(v.length - 1, Math.floor(q * v.length))] ?? NaN;
  const round = (x: number) => Math.round(x * 10) / 10;
  return { n: v.length, medianMs: round(at(0.5)), p90Ms: round(at(0.9)), worstMs: round(v[v.length - 1] ?? NaN) };
}

/** How long fn takes, in ms (monotonic clock). */
async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
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
 * The API floor: create a ConfigMap, time until a watch (the same Informer the Agent figures use)
 * delivers it. One at a time, `count` times.
 */
async function createToWatch(stack: Stack, ns: string, count: number): Promise<Stats> {
  const kc = loadKubeConfig(stack.controlPlane.kubeconfigPath);
  const core = kc.makeApiClient(CoreV1Api);
  const arrived = new Map<string, () => void>();
  const informer = new Informer<V1ConfigMap & KubeObject>(kc, { resource: CONFIG_MAP_RESOURCE, namespace: ns, logger: pino({ level: 'warn' }) });
  informer.onAdd((cm) => arrived.get(cm.metadata?.name ?? '')?.());
  informer.start();
  try {
    await informer.waitForSync(30_000);
    const times: number[] = [];
    for (let i = 0; i < count; i++) {
      const name = `bench-floor-${i}`;
      const seen = new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`ConfigMap ${name} not seen on the watch within 30 s`)), 30_000);
        arrived.set(name, () => {
          clearTimeout(timer);
          resolve();
        });
      });
      times.push(
        await timed(async () => {
          await core.createNamespacedConfigMap({ namespace: ns, body: { metadata: { name }, data: { i: String(i) } } });
          await seen;
        }),
      );
    }
    return stats(times);
  } finally {
    await informer.stop();
    closeConnections(kc);
  }
}

/** The tmux floor: `new-session -d` and `kill-session` on a private server that already runs a session. */
async function tmuxSession(count: number): Promise<{ newSession: Stats; killSession: Stats }> {
  const dir = await mkdtemp(join(tmpdir(), 'agent-operator-bench-tmux-'));
  const tmux = (...args: string[]) => execa('tmux', ['-f', '/dev/null', '-S', join(dir, 'sock'), ...args], { timeout: COMMAND_TIMEOUT_MS, stdin: 'ignore' });
  try {
    await tmux('new-session', '-d', '-s', 'keep', 'sleep 600');
    const created: number[] = [];
    const killed: number[] = [];
    for (let i = 0; i < count; i++) {
      created.push(await timed(() => tmux('new-session', '-d', '-s', `s${i}`, '-x', '200', '-y', '50', 'sleep 600')));
      killed.push(await timed(() => tmux('kill-session', '-t', `=s${i}`)));
    }
    return { newSession: stats(created), killSession: stats(killed) };
  } finally {
    await tmux('kill-server').catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * What the sandbox itself costs a launch: spawning `true` through the agent's prefix (join a cgroup
 * leaf, setsid, setpriv to an unused uid, bwrap with an agent's mounts) minus spawning `true` bare,
 * interleaved, `count` times each; and the same with the prefix's programs added one by one.
 */
async function sandboxCost(count: number) {
  const uids = parseUidRange(DEFAULT_UID_RANGE, [0, process.getuid?.() ?? 0]);
  const id = uids.first + uids.count - 1; // the last of the range: a stack's agents take the lowest free
  const sandbox = await nodeSandbox('bwrap', uids, [PACKAGE_ROOT, dirname(process.execPath)]);
  const dir = await mkdtemp(join(tmpdir(), 'agent-operator-bench-sandbox-'));
  const cgroupDir = await agentCgroupDir(`agent-operator-bench-${process.pid}`);
  try {
    await chmod(dir, 0o711);
    const [scratch, home] = [join(dir, 'scratch'), join(dir, 'home')];
    for (const d of [scratch, home]) {
      await mkdir(d, { mode: 0o700 });
      await chown(d, id, id);
    }
    const prompt = join(dir, 'prompt');
    await writeFile(prompt, 'bench\n', { mode: 0o444 });
    const bin = join(dir, 'bin');
    await mkdir(bin, { mode: 0o755 });
    let join_: string[] = [];
    if (cgroupDir) {
      const leaf = leafOf({ dir: cgroupDir, controllers: [] }, randomUUID());
      await mkdir(leaf, { recursive: true });
      join_ = joinCgroupArgv(leaf);
    }
    const sandboxed = sandboxArgv(sandbox.host, { uid: id, gid: id, writable: [scratch, home], readOnly: [prompt, bin] });
    const bwrapAt = sandboxed.indexOf('bwrap');
    // Each stage adds one program of the prefix, so what each costs shows too.
    const stages: [string, string[]][] = [
      ['bare', []],
      ['cgroup join (sh)', join_],
      ['setsid', [...join_, ...sandboxed.slice(0, 1)]],
      ['setpriv', [...join_, ...sandboxed.slice(0, bwrapAt)]],
      ['bwrap', [...join_, ...sandboxed]],
    ];
    const times = stages.map((): number[] => []);
    for (let i = 0; i < count; i++) {
      for (const [k, [, prefix]] of stages.entries()) {
        const argv = [...prefix, '/bin/true'];
        times[k]!.push(await timed(() => execa(argv[0]!, argv.slice(1), { timeout: COMMAND_TIMEOUT_MS, stdin: 'ignore', cwd: '/' })));
      }
    }
    const st = times.map(stats);
    const b = st[0]!;
    const s = st[st.length - 1]!;
    const stageCostMs = Object.fromEntries(stages.slice(1).map(([name], k) => [name, Math.round((st[k + 1]!.medianMs - st[k]!.medianMs) * 10) / 10]));
    return { bareSpawn: b, sandboxedSpawn: s, costMedianMs: Math.round((s.medianMs - b.medianMs) * 10) / 10, stageCostMs, cgroupJoin: cgroupDir !== undefined };
  } finally {
    if (cgroupDir) await removeAgentCgroups(cgroupDir);
    await rm(dir, { recursive: true, force: true });
  }
}

/** Every sidecar's spawn counter by op, and its launch resumes (a resume in a bench is a sidecar seeing its own launch half-way). */
async function nodeCounters(stack: Stack): Promise<Record<SpawnOp | 'resumes', number>> {
  const scraped = await Promise.all(stack.nodes.map((n) => scrape(n.metricsUrl)));
  const sum = (name: string, labels: Record<string, string> = {}) => scraped.reduce((acc, samples) => acc + (metricValue(samples, name, labels) ?? 0), 0);
  return {
    ...(Object.fromEntries(SPAWN_OPS.map((op) => [op, sum('agent_operator_node_process_spawns_total', { op })])) as Record<SpawnOp, number>),
    resumes: sum('agent_operator_launch_resumes_total'),
  };
}

/** The sidecars' spawns per agent while fn ran (and the launch resumes, in all). */
async function spawnsPerAgent<T>(stack: Stack, agents: number, fn: () => Promise<T>): Promise<[T, Record<SpawnOp, number> & { launchResumes: number }]> {
  const before = await nodeCounters(stack);
  const result = await fn();
  const after = await nodeCounters(stack);
  const per = Object.fromEntries(SPAWN_OPS.map((op) => [op, Math.round(((after[op] - before[op]) / agents) * 100) / 100])) as Record<SpawnOp, number>;
  return [result, { ...per, launchResumes: after.resumes - before.resumes }];
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
      }),
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
    });
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

const ratio = (ms: number, floorMs: number) => Math.round((ms / floorMs) * 10) / 10;

type Result = Awaited<ReturnType<typeof measure>>;

async function measure() {
  const concurrent = Number(process.env.BENCH_CONCURRENT ?? 10);
  const sequential = Number(process.env.BENCH_SEQUENTIAL ?? 20);
  const floorSamples = Number(process.env.BENCH_FLOOR_SAMPLES ?? 30);
  const dir = await mkdtemp(join(tmpdir(), 'agent-operator-bench-'));
  const stack = await Stack.start({ stateDir: dir, logger: pino({ level: 'warn' }), nodes: 2, capacity: Math.max(5, Math.ceil(concurrent / 2)) });
  try {
    await stack.controlPlane.kubectl(['create', 'namespace', 'bench']);
    const roundTrip = await createToWatch(stack, 'bench', floorSamples);
    const tmux = await tmuxSession(floorSamples);
    const sandbox = await sandboxCost(floorSamples);
    const floorMs = Math.round((roundTrip.medianMs + tmux.newSession.medianMs) * 10) / 10;
    const [c, cSpawns] = await spawnsPerAgent(stack, concurrent, () => runBatch(stack, 'bench', concurrent, true));
    const t0 = Date.now();
    const [s, sSpawns] = await spawnsPerAgent(stack, sequential, () => runBatch(stack, 'bench', sequential, false));
    const seqSeconds = (Date.now() - t0) / 1000;
    const steady = await steadyState(stack, 'bench', concurrent, Number(process.env.BENCH_STEADY_SECONDS ?? 20));
    const cs = summarize(c);
    const ss = summarize(s);
    return {
      machine: { cores: cpus().length, node: process.version },
      method:
        'floor = p50 of a ConfigMap create → seen on a watch (same apiserver) + p50 of a bare `tmux new-session -d`; ' +
        'apply→Running: Agent create call → phase Running seen by a watch; end→cleanup: the agent prints its clock just before exiting → status.cleanup seen by a watch; ' +
        'sandbox cost: p50 spawn of `true` through cgroup join + setsid + setpriv + bwrap minus p50 bare spawn of `true`; ' +
        "spawns: the sidecars' agent_operator_node_process_spawns_total{op} over the batch, per agent",
      floor: { ms: floorMs, createToWatch: roundTrip, tmuxNewSession: tmux.newSession, tmuxKillSession: tmux.killSession },
      concurrent: { agents: concurrent, ...cs, spawnsPerAgent: cSpawns },
      sequential: { agents: sequential, seconds: Math.round(seqSeconds * 10) / 10, agentsPerMinute: Math.round((sequential / seqSeconds) * 600) / 10, ...ss, spawnsPerAgent: sSpawns },
      sandbox,
      ratios: {
        concurrentApplyToRunning: ratio(cs.applyToRunning.medianMs, floorMs),
        sequentialApplyToRunning: ratio(ss.applyToRunning.medianMs, floorMs),
        concurrentEndToCleanup: ratio(cs.endToCleanupRecord.medianMs, floorMs),
        sequentialEndToCleanup: ratio(ss.endToCleanupRecord.medianMs, floorMs),
      },
      steadyState: steady,
      rssKiB: {
        controller: await rssKiB(stack.controllerComponents[0]?.process()?.pid),
        sidecars: await Promise.all(stack.nodes.map(async (n) => ({ node: n.name, rss: await rssKiB(n.process()?.pid) }))),
      },
    };
  } finally {
    await stack.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

/** The figures as a table: each with its floor ratio and the target issue 8 sets (pure). */
function table(r: Result): string {
  const rows: [string, string, string, string, string][] = [];
  const ms = (x: number) => `${x} ms`;
  const verdict = (ok: boolean) => (ok ? 'ok' : 'MISSED');
  const timing = (what: string, st: Stats, maxRatio?: number) => {
    const x = ratio(st.medianMs, r.floor.ms);
    rows.push([what, ms(st.medianMs), ms(st.p90Ms), `${x}×`, maxRatio === undefined ? '' : `≤ ${maxRatio}× ${verdict(x <= maxRatio)}`]);
  };
  const floorRow = (what: string, st: Stats) => rows.push([what, ms(st.medianMs), ms(st.p90Ms), '', '']);
  floorRow('floor: create → watch round trip', r.floor.createToWatch);
  floorRow('floor: tmux new-session -d', r.floor.tmuxNewSession);
  floorRow('      (tmux kill-session)', r.floor.tmuxKillSession);
  rows.push(['FLOOR (round trip + new-session)', ms(r.floor.ms), '', '1×', '']);
  timing(`apply→Running, ${r.concurrent.agents} at once`, r.concurrent.applyToRunning, 5);
  timing(`apply→Running, sequential (${r.sequential.agents})`, r.sequential.applyToRunning, 3);
  timing(`end→cleanup, ${r.concurrent.agents} at once`, r.concurrent.endToCleanupRecord);
  timing('end→cleanup, sequential', r.sequential.endToCleanupRecord);
  rows.push([`sandbox cost per launch${r.sandbox.cgroupJoin ? '' : ' (no cgroup v2: no join)'}`, ms(r.sandbox.costMedianMs), '', '', `≤ 20 ms ${verdict(r.sandbox.costMedianMs <= 20)}`]);
  rows.push([
    '  spawn of true: bare / sandboxed',
    `${ms(r.sandbox.bareSpawn.medianMs)} / ${ms(r.sandbox.sandboxedSpawn.medianMs)}`,
    `${ms(r.sandbox.bareSpawn.p90Ms)} / ${ms(r.sandbox.sandboxedSpawn.p90Ms)}`,
    '',
    '',
  ]);
  for (const [what, sp] of [
    [`${r.concurrent.agents} at once`, r.concurrent.spawnsPerAgent],
    ['sequential', r.sequential.spawnsPerAgent],
  ] as const) {
    rows.push([`sidecar spawns per launch, ${what}`, String(sp.launch), '', '', `≤ 2 ${verdict(sp.launch <= 2)}`]);
    rows.push([`sidecar spawns per cleanup, ${what}`, String(sp.cleanup), '', '', `≤ 2 ${verdict(sp.cleanup <= 2)}`]);
    rows.push([`  other spawns per agent, ${what}`, String(sp.other), '', '', '']);
    rows.push([`  launches resumed, ${what}`, String(sp.launchResumes), '', '', '']);
  }
  const head: [string, string, string, string, string] = ['figure', 'p50', 'p90', '× floor', 'target'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (row: readonly string[]) =>
    row
      .map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [
    `${r.machine.cores} cores, Node ${r.machine.node}; sequential: ${r.sequential.agentsPerMinute} agents/min`,
    line(head),
    line(widths.map((w) => '-'.repeat(w))),
    ...rows.map(line),
    `sandbox cost by stage (p50 added): ${Object.entries(r.sandbox.stageCostMs)
      .map(([k, v]) => `${k} ${v} ms`)
      .join(', ')}`,
    "other spawns: the reconciles' and the relist's reads of the panes, the heartbeat (not part of a launch or cleanup)",
    `steady state: ${r.steadyState.agents} agents, sidecars ${r.steadyState.sidecarsCpuPercentOfOneCore}% of one core; RSS controller ${r.rssKiB.controller} KiB, sidecars ${r.rssKiB.sidecars.map((x) => x.rss).join(' / ')} KiB`,
  ].join('\n');
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const unknown = args.filter((a) => a !== '--json');
  if (unknown.length > 0) throw new Error(`unknown argument(s) ${unknown.join(' ')}; usage: npm run bench [-- --json]`);
  const result = await measure();
  // With --json the JSON goes to stdout and the table to stderr: both from the same run.
  if (args.includes('--json')) {
    console.error(table(result));
    console.log(JSON.stringify(result, null, 2));
  } else console.log(table(result));
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
