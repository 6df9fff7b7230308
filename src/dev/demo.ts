/**
 * `npm run demo`: the local stack, the example Agents applied, their progress shown live, each
 * one's final status and cleanup record printed, and everything stopped again. Exits 0 when every
 * example ended as its `orchestrator.dev/demo-expect` annotation says and was cleaned up, and the
 * children they spawned (shown with them) were cleaned up too.
 */
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseAllDocuments, stringify } from 'yaml';
import type { Agent } from '../api/agent.js';
import { PARENT_LABEL } from '../api/constants.js';
import { isTerminalPhase } from '../api/phase.js';
import { helpText, intFlag, parseFlags, untilSignal, type FlagSpec } from '../cmd/flags.js';
import { loadKubeConfig } from '../kube/client.js';
import { agentClient, type KubeObject } from '../kube/resources.js';
import { ensureBinaries } from './binaries.js';
import { stderrLogger } from './logger.js';
import { PACKAGE_ROOT } from './paths.js';
import { optInReferences, Stack } from './stack.js';

const EXPECT = 'orchestrator.dev/demo-expect';
const NAMESPACE = 'demo';
type AgentObj = Agent & KubeObject;

const FLAGS: FlagSpec = {
  'timeout-seconds': { type: 'string', default: '180', help: 'give up when the examples have not finished by then' },
  'keep-state': { type: 'boolean', default: false, help: 'keep the state dir (logs, archives) and print its path' },
};

/** The example Agents that say how they should end. */
async function demoAgents(): Promise<AgentObj[]> {
  const dir = join(PACKAGE_ROOT, 'examples');
  const out: AgentObj[] = [];
  for (const file of (await readdir(dir)).filter((f) => f.endsWith('.yaml')).sort()) {
    for (const doc of parseAllDocuments(await readFile(join(dir, file), 'utf8'))) {
      const obj = doc.toJS() as AgentObj | null;
      if (obj?.kind === 'Agent' && obj.metadata?.annotations?.[EXPECT]) out.push({ ...obj, metadata: { ...obj.metadata, namespace: NAMESPACE } });
    }
  }
  return out;
}

function line(a: AgentObj): string {
  const s = a.status ?? {};
  const progress = s.progress !== undefined ? ` ${s.progress}%` : '';
  return `${a.metadata?.name}: ${s.phase ?? 'Pending'}${progress}${s.message ? ` — ${s.message}` : ''}${s.cleanup?.completionTime ? ' [cleaned up]' : ''}`;
}

export async function runDemo(argv: string[]): Promise<number> {
  const flags = parseFlags(argv, FLAGS);
  if (flags.help) {
    console.log(helpText('Usage: agent-operator demo\n\nRuns the example Agents on a local stack and shows what happens to them.', FLAGS));
    return 0;
  }
  const timeoutMs = intFlag(flags, 'timeout-seconds', 10) * 1000;
  const logger = stderrLogger('demo');
  logger.level = process.env.LOG_LEVEL ?? 'warn';
  const stateDir = await mkdtemp(join(tmpdir(), 'agent-operator-demo-'));
  const signal = untilSignal();
  let stack: Stack | undefined;
  let ok = false;
  try {
    // Resolved here, not inside the stack, so a first run says what it builds and how far it is (the logger is quiet).
    await ensureBinaries({ logger, progress: (l) => console.log(l) });
    console.log('starting the local stack (control plane, controller, 2 nodes)...');
    stack = await Stack.start({ stateDir, logger, nodes: 2 });
    const kubectl = stack.controlPlane.kubectl.bind(stack.controlPlane);
    await kubectl(['create', 'namespace', NAMESPACE]);
    // The examples read ConfigMaps and Secrets: the namespace opts in, as the README shows.
    await optInReferences(loadKubeConfig(stack.controlPlane.kubeconfigPath), NAMESPACE);
    const examples = await demoAgents();
    const applied = await kubectl(['apply', '-f', '-'], { input: examples.map((e) => JSON.stringify(e)).join('\n') });
    if (applied.exitCode !== 0) throw new Error(`applying the examples failed: ${applied.stderr}`);
    console.log(applied.stdout.trim());
    const api = agentClient(loadKubeConfig(stack.controlPlane.kubeconfigPath));
    const shown = new Map<string, string>();
    const deadline = Date.now() + timeoutMs;
    const names = examples.map((e) => e.metadata?.name);
    let finished: AgentObj[] = [];
    for (;;) {
      const list = (await api.list({ namespace: NAMESPACE })).items;
      for (const a of list) {
        const l = line(a);
        if (shown.get(a.metadata?.name ?? '') !== l) console.log(`  ${l}`);
        shown.set(a.metadata?.name ?? '', l);
      }
      finished = list.filter((a) => isTerminalPhase(a.status?.phase) && a.status?.cleanup?.completionTime);
      // Every example, and every child an example spawned, finished and cleaned up.
      if (names.every((n) => list.some((a) => a.metadata?.name === n)) && finished.length === list.length) break;
      if (Date.now() > deadline) throw new Error(`the examples did not finish within ${timeoutMs / 1000}s`);
      if (await Promise.race([sleep(250).then(() => false), signal.promise.then(() => true)])) throw new Error('interrupted');
    }
    ok = true;
    for (const a of finished.sort((x, y) => (x.metadata?.name ?? '').localeCompare(y.metadata?.name ?? ''))) {
      const s = a.status ?? {};
      const expected = a.metadata?.annotations?.[EXPECT];
      const parent = a.metadata?.labels?.[PARENT_LABEL];
      const verdict = expected === undefined ? `child of ${parent ?? '?'}` : s.phase === expected ? 'as expected' : `EXPECTED ${expected}`;
      if (expected !== undefined && s.phase !== expected) ok = false;
      console.log(`\n=== ${a.metadata?.name}: ${s.phase} (${s.reason}) ${verdict}`);
      console.log(stringify({ phase: s.phase, reason: s.reason, message: s.message, progress: s.progress, exitCode: s.exitCode, findings: s.findings?.total, cleanup: s.cleanup }).trimEnd());
    }
  } finally {
    signal.dispose();
    await stack?.stop();
    if (flags['keep-state']) console.log(`\nstate kept in ${stateDir}`);
    else await rm(stateDir, { recursive: true, force: true });
  }
  console.log(ok ? '\ndemo finished: every agent ended as expected and was cleaned up; nothing is left running.' : '\ndemo finished with unexpected outcomes.');
  return ok ? 0 : 1;
}
