/**
 * What an admin sees: Prometheus metrics and probes of the controller and the sidecars, structured
 * logs that name the Agent they are about, Events in `kubectl describe`; and the `dev` command as a
 * developer runs it.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { access, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { execa } from 'execa';
import { pino } from 'pino';
import { PHASES } from '../../src/api/phase.js';
import { PACKAGE_ROOT } from '../../src/dev/paths.js';
import { killNodeLeftovers, type Component } from '../../src/dev/stack.js';
import { groupByAgent, listProcesses } from '../../src/sidecar/runtime/procfs.js';
import { createTestNamespace, kubectl, waitFor } from '../support/cluster.js';
import { useGates } from '../support/gate.js';
import { agentManifest, agents, assertNothingLeft, createAgent, useStack, waitForAgent, waitForCleanedUp, type AgentObj } from '../support/stack.js';
import { metricValue, scrape, type Sample } from '../support/telemetry.js';

const CLI = join(PACKAGE_ROOT, 'dist', 'src', 'cli.js');

async function get(url: string): Promise<{ status: number; body: string }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
  return { status: res.status, body: await res.text() };
}

async function assertProbesOk(c: Pick<Component, 'name' | 'healthUrl'>): Promise<void> {
  for (const path of ['/healthz', '/readyz']) {
    const r = await get(`${c.healthUrl}${path}`);
    assert.equal(r.status, 200, `${c.name} ${path}: ${r.body}`);
  }
}

function assertHas(samples: readonly Sample[], name: string, labels: Record<string, string> = {}): number {
  const v = metricValue(samples, name, labels);
  assert.ok(v !== undefined && Number.isFinite(v), `no ${name}${JSON.stringify(labels)} in /metrics`);
  return v;
}

/** The keys of a JSON object's top level in order, repeats included (JSON.parse keeps only the last). */
function topLevelKeys(text: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      if (depth === 1 && text[j + 1] === ':') keys.push(JSON.parse(text.slice(i, j + 1)) as string);
      i = j;
    } else if (c === '{' || c === '[') depth++;
    else if (c === '}' || c === ']') depth--;
  }
  return keys;
}

/** Every log line of the component that mentions the Agent's UID names it: namespace, name and uid, each once. */
async function assertLogsNameAgent(c: Component, agent: AgentObj): Promise<number> {
  const { namespace, name, uid } = agent.metadata as { namespace: string; name: string; uid: string };
  const lines = (await readFile(c.process()!.logPath, 'utf8')).split('\n').filter((l) => l.includes(uid));
  for (const line of lines) {
    const entry = JSON.parse(line) as Record<string, unknown>;
    const where = `${c.name}: ${line.slice(0, 300)}`;
    assert.deepEqual([entry.namespace, entry.name, entry.uid], [namespace, name, uid], where);
    const keys = topLevelKeys(line);
    assert.deepEqual(
      keys.filter((k, i) => keys.indexOf(k) !== i),
      [],
      `repeated keys in ${where}`,
    );
  }
  return lines.length;
}

describe('observability', () => {
  const stack = useStack('obs');
  const gates = useGates(stack);

  it('metrics and probes of controller and sidecar, logs naming the Agent, Events in kubectl describe', async (t) => {
    const ns = await createTestNamespace(t, 'obs');
    const controller = stack().controllerComponents[0]!;
    const node = stack().nodes[0]!;
    for (const c of [controller, ...stack().nodes]) await assertProbesOk(c);

    const cleanupsBefore = assertHas(await scrape(node.metricsUrl), 'agent_operator_cleanup_duration_seconds_count');
    for (const name of ['o1', 'o2']) await createAgent(ns, name, gates().spec('exit 0', { nodeName: node.name }));
    for (const name of ['o1', 'o2']) await waitForAgent(ns, name, (a) => a.status?.phase === 'Running', 'to be Running');

    // Sessions on the node, as of its latest heartbeat.
    await waitFor(async () => metricValue(await scrape(node.metricsUrl), 'agent_operator_sessions', { node: node.name }) === 2, {
      timeoutMs: 20_000,
      what: `agent_operator_sessions{node="${node.name}"} to be 2`,
    });
    // Agents by phase: the controller's gauge agrees with the API server (all namespaces, as its cache).
    const byPhase = await waitFor(
      async () => {
        const counts = new Map<string, number>(PHASES.map((p) => [p, 0]));
        for (const a of (await agents().list()).items) counts.set(a.status?.phase ?? 'Pending', (counts.get(a.status?.phase ?? 'Pending') ?? 0) + 1);
        const samples = await scrape(controller.metricsUrl);
        return [...counts].every(([phase, n]) => metricValue(samples, 'agent_operator_agents', { phase }) === n) ? counts : undefined;
      },
      { timeoutMs: 15_000, what: 'agent_operator_agents{phase} to match the Agents' },
    );
    assert.ok((byPhase.get('Running') ?? 0) >= 2);

    await gates().open('o2');
    const o2 = await waitForCleanedUp(ns, 'o2');
    const nodeSamples = await scrape(node.metricsUrl);
    assert.equal(assertHas(nodeSamples, 'agent_operator_cleanup_duration_seconds_count'), cleanupsBefore + 1);
    assertHas(nodeSamples, 'agent_operator_cleanup_failures_total');
    for (const [c, controllerName] of [
      [controller, 'agent'],
      [node, 'agent-node'],
    ] as const) {
      const s = await scrape(c.metricsUrl);
      assert.ok(assertHas(s, 'controller_runtime_reconcile_total', { controller: controllerName }) > 0, `${c.name} reconciled nothing`);
      assertHas(s, 'controller_runtime_reconcile_errors_total', { controller: controllerName });
      assert.ok(assertHas(s, 'controller_runtime_reconcile_time_seconds_count', { controller: controllerName }) > 0);
      assertHas(s, 'workqueue_depth', { name: controllerName });
    }
    assert.equal(assertHas(await scrape(controller.metricsUrl), 'leader_election_master_status'), 1);

    // `kubectl describe` lists the Agent's Events (events.k8s.io Events read as core/v1 ones).
    await waitFor(
      async () => {
        const r = await kubectl(['describe', 'agent', 'o2', '-n', ns]);
        return r.exitCode === 0 && ['Scheduled', 'SessionStarted', 'Exited', 'CleanedUp'].every((reason) => new RegExp(`Events:[\\s\\S]*\\b${reason}\\b`).test(r.stdout));
      },
      { timeoutMs: 15_000, what: 'kubectl describe agent o2 to list its Events' },
    );

    await gates().open('o1');
    const o1 = await waitForCleanedUp(ns, 'o1');
    for (const a of [o1, o2]) {
      assert.ok((await assertLogsNameAgent(controller, a)) > 0, `the controller logged nothing about ${a.metadata?.name}`);
      assert.ok((await assertLogsNameAgent(node, a)) > 0, `the sidecar logged nothing about ${a.metadata?.name}`);
      await assertNothingLeft(stack(), a);
    }
  });
});

/** Processes whose command line names `dir` (what the dev stack runs keeps its state there), as `pid: argv`. */
async function processesUnder(dir: string): Promise<string[]> {
  const found: string[] = [];
  for (const pid of (await readdir('/proc')).filter((n) => /^\d+$/.test(n))) {
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes(dir)) found.push(`${pid}: ${cmdline.replaceAll('\0', ' ')}`);
  }
  return found;
}

describe('agent-operator dev', () => {
  it('runs the stack in the foreground with a working env file, and Ctrl-C leaves nothing running', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'dev-'));
    const roots = ['node-1', 'node-2'].map((n) => join(dir, 'nodes', n));
    const { KUBECONFIG: _, ...env } = process.env;
    const child = spawn(process.execPath, [CLI, 'dev', '--nodes', '2', '--state-dir', dir], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr = (stderr + b.toString()).slice(-20_000)));
    t.after(async () => {
      // A failed test: the stack's own children die with it (PDEATHSIG); what the nodes ran does not.
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
      for (const root of roots) await killNodeLeftovers(root, pino({ level: 'warn' }));
      await rm(dir, { recursive: true, force: true });
    });

    await waitFor(() => (child.exitCode !== null ? Promise.reject(new Error(`dev exited early:\n${stderr}`)) : /^# ready: 2 node\(s\)/m.test(stdout)), {
      timeoutMs: 180_000,
      intervalMs: 250,
      what: 'agent-operator dev to print its ready line',
    });

    // As a developer uses it: `source DIR/env`, then kubectl and the URLs. A bare PATH and no
    // KUBECONFIG, so kubectl is found and pointed at the cluster by DIR/env alone.
    const envFile = join(dir, 'env');
    const shell = (script: string) => execa('sh', ['-c', `. "$1" && ${script}`, 'sh', envFile], { timeout: 30_000, env: { ...env, PATH: '/usr/bin:/bin' }, extendEnv: false, reject: false });
    const vars = await shell('printf "%s\\n" "$KUBECONFIG" "$CONTROLLER_METRICS_URL" "$CONTROLLER_HEALTH_URL" "$(command -v kubectl)" "$PATH"');
    assert.equal(vars.exitCode, 0, vars.stderr);
    const [kubeconfig, metricsUrl, healthUrl, kubectlPath, path] = vars.stdout.split('\n') as [string, string, string, string, string];
    await access(kubeconfig);
    const [binDir, ...rest] = path.split(':');
    assert.equal(rest.join(':'), '/usr/bin:/bin', `DIR/env does not prepend the stack's bin dir to PATH: ${path}`);
    assert.equal(kubectlPath, join(binDir!, 'kubectl'), "the stack's kubectl is not the one found on PATH");
    const nodes = await shell('kubectl get agentnodes -o name');
    assert.equal(nodes.exitCode, 0, nodes.stderr);
    assert.deepEqual(nodes.stdout.split('\n').sort(), ['agentnode.orchestrator.dev/node-1', 'agentnode.orchestrator.dev/node-2']);
    const metrics = await get(metricsUrl);
    assert.equal(metrics.status, 200);
    assert.match(metrics.body, /^controller_runtime_reconcile_total/m);
    await assertProbesOk({ name: 'dev controller', healthUrl });

    // An agent left running when the developer hits Ctrl-C.
    const manifest = JSON.stringify(agentManifest('default', 'left-running', { command: ['sleep', '300'] }));
    const applied = await kubectl(['apply', '-f', '-'], { kubeconfig, input: manifest });
    assert.equal(applied.exitCode, 0, applied.stderr);
    await waitFor(async () => (await kubectl(['get', 'agent', 'left-running', '-n', 'default', '-o', 'jsonpath={.status.phase}'], { kubeconfig })).stdout === 'Running', {
      timeoutMs: 30_000,
      what: 'the dev Agent to be Running',
    });
    const agentProcs = async () => {
      const procs = await listProcesses();
      return roots.flatMap((root) => [...groupByAgent(procs, root).values()].flat());
    };
    assert.ok((await agentProcs()).length > 0, 'the dev Agent runs no process');

    const before = (await processesUnder(dir)).join('\n');
    for (const what of [/\/etcd /, /\/kube-apiserver /, /cli\.js controller /, /cli\.js sidecar /, /^\d+: tmux /m]) assert.match(before, what, 'the scan for leftovers does not see the stack');

    child.kill('SIGINT');
    const exit = await Promise.race([exited, sleep(90_000, undefined, { ref: false })]);
    assert.deepEqual(exit, { code: 0, signal: null }, `dev did not exit 0 within 90 s:\n${stderr}`);

    assert.deepEqual(await processesUnder(dir), [], 'processes of the dev stack left running');
    assert.deepEqual(
      (await agentProcs()).map((p) => `${p.pid} ${p.comm}`),
      [],
      'agent processes left on the dev nodes',
    );
    await assert.rejects(access(envFile), 'DIR/env still points at a stopped cluster');
  });
});
