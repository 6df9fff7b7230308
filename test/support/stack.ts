/**
 * The local stack (controller + simulated nodes) against the run's control plane, for lifecycle
 * tests, and the invariant every test checks afterwards: a finished Agent left nothing on its
 * node and its logs are in the archive, matching their manifest.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, readlink, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before } from 'node:test';
import { pino } from 'pino';
import type { Agent } from '../../src/api/agent.js';
import { isTerminalPhase } from '../../src/api/phase.js';
import { Stack, type StackOptions } from '../../src/dev/stack.js';
import { agentClient, type KubeObject } from '../../src/kube/resources.js';
import { archiveLocation } from '../../src/sidecar/runtime/archive.js';
import { findMarkerProcesses, groupByAgent, listProcesses } from '../../src/sidecar/runtime/procfs.js';
import { listSessions } from '../../src/sidecar/runtime/observe.js';
import { listWorkspaces, workspacePaths } from '../../src/sidecar/runtime/workspace.js';
import { controlPlane, kubeConfig, waitFor } from './cluster.js';
import { awaitNoLeftovers } from './leftovers.js';

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
      // The components' own level (their logs are in the stack's state dir; AO_KEEP_STATE=1 keeps them).
      ...(process.env.AO_STACK_LOG_LEVEL ? { logLevel: process.env.AO_STACK_LOG_LEVEL } : {}),
      ...opts,
      nodes,
    });
  });
  after(async () => {
    // The file's namespaces are being deleted (each test's own hook): their Agents need this stack's
    // controller and sidecars to be cleaned up and released, so it outlives them (bounded; what is
    // still there then is the file-isolation check's to report).
    if (stack) await awaitNoLeftovers(kubeConfig(), 90_000, ['Namespace', 'Agent']);
    await stack?.stop();
    // maxRetries: an output capture whose session just ended writes its last (empty) segment file as it ends.
    if (dir && !process.env.AO_KEEP_STATE) await rm(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 });
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
  };
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

/** No session, no marker process, no prompt and no workspace of `uid` on any node of the stack. */
export async function assertNodeClean(stack: Stack, uid: string): Promise<void> {
  for (const node of stack.nodes) {
    const sessions = await listSessions(node.root);
    assert.ok(!sessions.some((s) => s.uid === uid), `session of ${uid} still on ${node.name}`);
    const procs = await findMarkerProcesses(node.root, uid);
    assert.deepEqual(
      procs.map((p) => p.pid),
      [],
      `processes of ${uid} still running on ${node.name}`,
    );
    const ws = workspacePaths(node.root, uid);
    assert.ok(await missing(ws.prompt), `prompt file of ${uid} still on ${node.name}`);
    assert.ok(await missing(ws.dir), `workspace of ${uid} still on ${node.name}`);
  }
}

/** No agent session, workspace or marker process at all on any node (when every Agent is finished). */
export async function assertNodesEmpty(stack: Stack): Promise<void> {
  for (const node of stack.nodes) {
    assert.deepEqual(
      (await listSessions(node.root)).map((s) => s.uid),
      [],
      `sessions left on ${node.name}`,
    );
    assert.deepEqual(
      (await listWorkspaces(node.root)).map((w) => w.uid),
      [],
      `workspaces left on ${node.name}`,
    );
    assert.deepEqual([...groupByAgent(await listProcesses(), node.root).keys()], [], `agent processes left on ${node.name}`);
    assert.deepEqual(await openFilesUnder(join(node.root, 'agents')), [], `files of agents still open on ${node.name}`);
  }
}

/** `<pid>: <path>` for every open file descriptor on a path under `dir` (the ancestor leaked open logs). */
async function openFilesUnder(dir: string): Promise<string[]> {
  const found: string[] = [];
  for (const pid of (await readdir('/proc')).filter((n) => /^\d+$/.test(n))) {
    const fds = await readdir(`/proc/${pid}/fd`).catch(() => [] as string[]);
    for (const fd of fds) {
      const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
      if (target.startsWith(`${dir}/`)) found.push(`${pid}: ${target}`);
    }
  }
  return found;
}

/** Where the node archives an Agent's logs (the documented `<archive>/<namespace>/<name>-<uid>/`). */
export function archiveDirOf(stack: Stack, nodeName: string, namespace: string, name: string, uid: string): string {
  return archiveLocation(stack.node(nodeName).archiveDir, { namespace, name, uid }).dir;
}

/** The archive at `dir` holds output.log and a manifest that matches every file it lists; returns the manifest. */
export async function assertArchive(dir: string): Promise<{ files: { name: string; bytes: number; sha256: string }[] }> {
  const manifest = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as { files: { name: string; bytes: number; sha256: string }[] };
  assert.ok(
    manifest.files.some((f) => f.name === 'output.log'),
    'output.log not archived',
  );
  for (const f of manifest.files) {
    const content = await readFile(join(dir, f.name));
    assert.equal(content.length, f.bytes, `${f.name}: size differs from the manifest`);
    assert.equal(sha256(content), f.sha256, `${f.name}: checksum differs from the manifest`);
  }
  return manifest;
}

/**
 * The promise, checked on the node: no session, no process, no prompt and no workspace for this
 * finished Agent, and (unless keepLogs is false) its archive holds a manifest that matches the files.
 */
export async function assertNothingLeft(stack: Stack, agent: AgentObj): Promise<void> {
  const uid = agent.metadata!.uid!;
  const nodeName = agent.status?.nodeName;
  assert.ok(isTerminalPhase(agent.status?.phase), `agent ${agent.metadata?.name} is not finished (${agent.status?.phase})`);
  await assertNodeClean(stack, uid);
  if (!nodeName) return; // never scheduled: nothing was ever on a node
  const c = agent.status?.cleanup;
  assert.ok(c?.completionTime, 'no cleanup record');
  assert.equal(c.verifiedNoProcesses, true, 'cleanup did not verify that no process remained');
  assert.equal(c.promptDeleted, true, 'cleanup did not delete the prompt');
  if (agent.spec.cleanup?.keepLogs === false || !agent.status?.startTime) {
    // Not kept, or nothing to keep: a launch that failed before the session (a missing Secret) wrote no logs.
    assert.equal(c.logsArchived, false);
    assert.equal(c.archivePath, undefined);
    assert.deepEqual(c.errors ?? [], []);
    return;
  }
  assert.equal(c.logsArchived, true, `logs not archived: ${(c.errors ?? []).join('; ')}`);
  const dir = archiveDirOf(stack, nodeName, agent.metadata!.namespace!, agent.metadata!.name!, uid);
  assert.equal(c.archivePath, dir);
  await assertArchive(dir);
}

/** The archived output of a finished Agent. */
export async function archivedOutput(agent: AgentObj): Promise<string> {
  return readFile(join(agent.status!.cleanup!.archivePath!, 'output.log'), 'utf8');
}

/** A merge patch on the Agent's spec, as `kubectl patch --type=merge -p '{"spec":...}'` sends it. */
export function patchSpec(namespace: string, name: string, spec: Partial<Agent['spec']>): Promise<AgentObj> {
  return agents().patch({ namespace, name }, { spec });
}

/** Waits until the Agent no longer exists (its finalizer released). */
export function waitForGone(namespace: string, name: string, timeoutMs = 60_000): Promise<true> {
  return waitFor(async () => (await agents().find({ namespace, name })) === undefined, { timeoutMs, what: `agent ${namespace}/${name} to be gone`, intervalMs: 100 });
}

/** Waits until the running agent's captured output (on its node) matches `pattern`; returns the output. */
export function waitForOutput(stack: Stack, agent: AgentObj, pattern: RegExp, timeoutMs = 30_000): Promise<string> {
  const path = workspacePaths(stack.node(agent.status!.nodeName!).root, agent.metadata!.uid!).output;
  return waitFor(
    async () => {
      const text = await readFile(path, 'utf8');
      return pattern.test(text) ? text : undefined;
    },
    { timeoutMs, what: `output of ${agent.metadata?.name} to match ${pattern}`, intervalMs: 100 },
  );
}
