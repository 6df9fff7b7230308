/**
 * The local stack (controller + simulated nodes) against the run's control plane, for lifecycle
 * tests, and the invariant every test checks afterwards: a finished Agent left nothing on its
 * node and its logs are in the archive, matching their manifest.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before } from 'node:test';
import { pino } from 'pino';
import type { Agent } from '../../src/api/agent.js';
import { isTerminalPhase } from '../../src/api/phase.js';
import { Stack, type StackOptions } from '../../src/dev/stack.js';
import { agentClient, type KubeObject } from '../../src/kube/resources.js';
import { findMarkerProcesses } from '../../src/sidecar/runtime/procfs.js';
import { listSessions } from '../../src/sidecar/runtime/observe.js';
import { workspacePaths } from '../../src/sidecar/runtime/workspace.js';
import { controlPlane, kubeConfig, waitFor } from './cluster.js';

export type AgentObj = Agent & KubeObject;

/**
 * Starts a stack for the file (before) and stops it (after), also when tests fail. Node names are
 * prefixed per file so files never see each other's nodes as their own.
 */
export function useStack(prefix: string, opts: Partial<StackOptions> = {}): () => Stack {
  let stack: Stack | undefined;
  let dir: string | undefined;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), `stack-${prefix}-`));
    const nodes = Array.isArray(opts.nodes) ? opts.nodes : Array.from({ length: typeof opts.nodes === 'number' ? opts.nodes : 2 }, (_, i) => `${prefix}-node-${i + 1}`);
    stack = await Stack.start({
      stateDir: dir,
      logger: pino({ level: process.env.LOG_LEVEL ?? 'warn' }, pino.destination(2)),
      controlPlane: await controlPlane(),
      heartbeatGraceSeconds: 15,
      nodeLostGraceSeconds: 30,
      ...opts,
      nodes,
    });
  });
  after(async () => {
    await stack?.stop();
    if (dir && !process.env.AO_KEEP_STATE) await rm(dir, { recursive: true, force: true });
  });
  return () => {
    if (!stack) throw new Error('stack not started');
    return stack;
  };
}

export const agents = () => agentClient(kubeConfig());

export function agentManifest(namespace: string, name: string, spec: Partial<Agent['spec']>): AgentObj {
  return {
    apiVersion: 'orchestrator.dev/v1alpha1',
    kind: 'Agent',
    metadata: { name, namespace },
    spec: { prompt: 'do the thing', command: ['true'], ...spec },
  } as AgentObj;
}

export async function createAgent(namespace: string, name: string, spec: Partial<Agent['spec']>): Promise<AgentObj> {
  return agents().create(agentManifest(namespace, name, spec));
}

/** Waits until the Agent satisfies `pred` and returns it. */
export function waitForAgent(namespace: string, name: string, pred: (a: AgentObj) => boolean, what: string, timeoutMs = 60_000): Promise<AgentObj> {
  return waitFor(
    async () => {
      const a = await agents().get({ namespace, name });
      return pred(a) ? a : undefined;
    },
    { timeoutMs, what: `agent ${namespace}/${name} ${what}`, intervalMs: 100 },
  );
}

/** Waits for a terminal phase and the node's cleanup record. */
export function waitForCleanedUp(namespace: string, name: string, timeoutMs = 90_000): Promise<AgentObj> {
  return waitForAgent(namespace, name, (a) => isTerminalPhase(a.status?.phase) && !!a.status?.cleanup?.completionTime, 'to finish and be cleaned up', timeoutMs);
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function missing(path: string): Promise<boolean> {
  return stat(path).then(
    () => false,
    () => true,
  );
}

/**
 * The promise, checked on the node: no session, no process, no prompt and no workspace for this
 * finished Agent, and (unless keepLogs is false) its archive holds a manifest that matches the files.
 */
export async function assertNothingLeft(stack: Stack, agent: AgentObj): Promise<void> {
  const uid = agent.metadata!.uid!;
  const nodeName = agent.status?.nodeName;
  assert.ok(isTerminalPhase(agent.status?.phase), `agent ${agent.metadata?.name} is not finished (${agent.status?.phase})`);
  for (const node of stack.nodes) {
    const sessions = await listSessions(node.root);
    assert.ok(!sessions.some((s) => s.uid === uid), `session of ${uid} still on ${node.name}`);
    const procs = await findMarkerProcesses(node.root, uid);
    assert.deepEqual(procs.map((p) => p.pid), [], `processes of ${uid} still running on ${node.name}`);
    const ws = workspacePaths(node.root, uid);
    assert.ok(await missing(ws.prompt), `prompt file of ${uid} still on ${node.name}`);
    assert.ok(await missing(ws.dir), `workspace of ${uid} still on ${node.name}`);
  }
  if (!nodeName) return; // never scheduled: nothing was ever on a node
  const c = agent.status?.cleanup;
  assert.ok(c?.completionTime, 'no cleanup record');
  assert.equal(c.verifiedNoProcesses, true, 'cleanup did not verify that no process remained');
  assert.equal(c.promptDeleted, true, 'cleanup did not delete the prompt');
  if (agent.spec.cleanup?.keepLogs === false) {
    assert.equal(c.logsArchived, false);
    return;
  }
  assert.equal(c.logsArchived, true, `logs not archived: ${(c.errors ?? []).join('; ')}`);
  const node = stack.node(nodeName);
  const dir = join(node.archiveDir, agent.metadata!.namespace!, `${agent.metadata!.name}-${uid}`);
  assert.equal(c.archivePath, dir);
  const manifest = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as { files: { name: string; bytes: number; sha256: string }[] };
  assert.ok(manifest.files.some((f) => f.name === 'output.log'), 'output.log not archived');
  for (const f of manifest.files) {
    const content = await readFile(join(dir, f.name));
    assert.equal(content.length, f.bytes, `${f.name}: size differs from the manifest`);
    assert.equal(sha256(content), f.sha256, `${f.name}: checksum differs from the manifest`);
  }
}

/** The archived output of a finished Agent. */
export async function archivedOutput(agent: AgentObj): Promise<string> {
  return readFile(join(agent.status!.cleanup!.archivePath!, 'output.log'), 'utf8');
}
