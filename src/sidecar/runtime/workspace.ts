/**
 * The node-side state of one agent, `<root>/agents/<uid>/`. Every path is derived from the
 * Kubernetes UID (validated strictly), never from a name, so no spec content can steer a path.
 * The directory and everything in it belong to root (mode 0711: the agent's uid may pass through
 * to its own scratch/ and home/, which it owns, and list or write nothing else); inside its
 * sandbox the agent sees only scratch/, home/ and its prompt (read-only).
 */
import { createHash } from 'node:crypto';
import { mkdir, readdir, rm, stat } from './boundedFs.js';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import { errnoOf, readOptional, writeFileAtomic } from './files.js';

/** A Kubernetes UID: an RFC 4122 UUID (versions 1-5, variant 10xx) in its canonical lowercase form. */
const UID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[1-5][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

export function isAgentUid(value: unknown): value is string {
  return typeof value === 'string' && UID_PATTERN.test(value);
}

export function assertAgentUid(value: unknown): asserts value is string {
  if (!isAgentUid(value)) {
    throw new Error(`invalid agent UID ${JSON.stringify(value)}: expected a lowercase RFC 4122 UUID`);
  }
}

export interface NodePaths {
  /** The node root, absolute. */
  root: string;
  /** `<root>/tmux.sock`: the node's private tmux server. */
  socket: string;
  /** `<root>/agents`: one workspace per agent. */
  agentsDir: string;
  /** `<root>/cleaned`: a tombstone per agent whose cleanup began (see writeTombstone). */
  cleanedDir: string;
}

export function nodePaths(root: string): NodePaths {
  const absRoot = resolve(root);
  return { root: absRoot, socket: join(absRoot, 'tmux.sock'), agentsDir: join(absRoot, 'agents'), cleanedDir: join(absRoot, 'cleaned') };
}

export interface WorkspacePaths extends NodePaths {
  uid: string;
  /** `<root>/agents/<uid>`. */
  dir: string;
  /** The prompt, mode 0600; $AGENT_PROMPT_FILE. */
  prompt: string;
  /** Everything the session printed, from its first byte. */
  output: string;
  /** Written (atomically) by the launcher once the command exited: its status, as the shell reports it. */
  exitCode: string;
  /** Written by the launcher when the command could not be started. */
  launchError: string;
  reports: string;
  findings: string;
  /** The agent's workspace: its default working directory, writable by it (its uid owns it). */
  scratch: string;
  /** The agent's HOME, writable by it. */
  home: string;
  /**
   * The agent's report channel: a node-owned directory (root:<agent gid>, 0750) holding the socket
   * the sidecar listens on for this agent only, bound read-only into its sandbox at SANDBOX_REPORT_DIR.
   */
  channel: string;
  /** The agent's uid (uids.ts), node-owned. */
  sandboxUid: string;
  /** Written by the launcher's exec step through fd 3: `started`, then a launch error if any. */
  execStatus: string;
  /** What setpriv/bwrap printed (the launcher quotes it when the sandbox could not be set up). */
  sandboxLog: string;
  /** The facts needed to rediscover and clean this agent after a sidecar restart. */
  agentJson: string;
  /** Written before the session starts, removed by the launcher once released: present, the command never ran. */
  go: string;
  /** The FIFO the launcher makes and waits on until output capture is attached (the sidecar writes `go` into it). */
  gate: string;
  /** argv, env and options for the launcher; removed by the launcher once read (they may hold secrets). */
  launchDir: string;
  /** `<root>/cleaned/<uid>`: outlives the workspace. */
  tombstone: string;
}

export function workspacePaths(root: string, uid: string): WorkspacePaths {
  assertAgentUid(uid);
  const node = nodePaths(root);
  const dir = join(node.agentsDir, uid);
  return {
    ...node,
    uid,
    dir,
    prompt: join(dir, 'prompt'),
    output: join(dir, 'output.log'),
    exitCode: join(dir, 'exit-code'),
    launchError: join(dir, 'launch-error'),
    reports: join(dir, 'reports.jsonl'),
    findings: join(dir, 'findings.jsonl'),
    scratch: join(dir, 'scratch'),
    home: join(dir, 'home'),
    channel: join(dir, 'channel'),
    sandboxUid: join(dir, 'sandbox-uid'),
    execStatus: join(dir, 'exec-status'),
    sandboxLog: join(dir, 'sandbox.log'),
    agentJson: join(dir, 'agent.json'),
    go: join(dir, 'go'),
    gate: join(dir, 'gate'),
    launchDir: join(dir, 'launch'),
    tombstone: join(node.cleanedDir, uid),
  };
}

const agentRecordSchema = z.object({
  version: z.literal(1),
  uid: z.string().refine(isAgentUid, 'not an agent UID'),
  namespace: z.string(),
  name: z.string(),
  sessionName: z.string(),
  /** SHA-256 (hex) of AGENT_REPORT_TOKEN; the token itself is never written to disk by us. */
  reportTokenSha256: z.string().optional(),
  /** When the workspace was prepared. */
  createdAt: z.string(),
  /** When the command was released (output capture attached). */
  startedAt: z.string().optional(),
  /** The output capture's cap as launched (capture.ts CaptureLimits): cleanup accounts with it. */
  output: z.object({ maxBytes: z.int().min(1), headBytes: z.int().min(1), segmentBytes: z.int().min(1), segments: z.int().min(1) }).optional(),
});

export type AgentRecord = z.infer<typeof agentRecordSchema>;

export function sha256Hex(value: string | Buffer): string {
  return createHash('sha256').update(value).digest('hex');
}

/** agent.json, or undefined when absent or unreadable as one (a crash never leaves half of it: it is written atomically). */
export async function readAgentRecord(paths: WorkspacePaths): Promise<AgentRecord | undefined> {
  const raw = await readOptional(paths.agentJson);
  if (!raw) return undefined;
  try {
    const parsed = agentRecordSchema.safeParse(JSON.parse(raw.toString('utf8')));
    return parsed.success && parsed.data.uid === paths.uid ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

export async function writeAgentRecord(paths: WorkspacePaths, record: AgentRecord): Promise<void> {
  await writeFileAtomic(paths.agentJson, `${JSON.stringify(record, null, 2)}\n`, 0o600);
}

export interface WorkspaceEntry {
  uid: string;
  /** When the workspace was prepared (agent.json), else the directory's mtime: the sweeper spares young ones. */
  createdAtMs: number;
  record?: AgentRecord;
}

/** The workspaces under `<root>/agents` (directories named by a valid UID; anything else is ignored). */
export async function listWorkspaces(root: string): Promise<WorkspaceEntry[]> {
  const { agentsDir } = nodePaths(root);
  let names: string[];
  try {
    names = await readdir(agentsDir);
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return [];
    throw err;
  }
  const entries: WorkspaceEntry[] = [];
  for (const uid of names.filter(isAgentUid).sort()) {
    const paths = workspacePaths(root, uid);
    let mtimeMs: number;
    try {
      const st = await stat(paths.dir);
      if (!st.isDirectory()) continue;
      mtimeMs = st.mtimeMs;
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') continue; // removed while we listed
      throw err;
    }
    const record = await readAgentRecord(paths);
    const created = record ? Date.parse(record.createdAt) : NaN;
    entries.push({ uid, createdAtMs: Number.isFinite(created) ? created : mtimeMs, ...(record ? { record } : {}) });
  }
  return entries;
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** Namespace and name as Kubernetes allows them (they name archive directories). */
export function assertObjectRef(namespace: string, name: string): void {
  if (namespace.length > 63 || !DNS_LABEL.test(namespace)) throw new Error(`invalid namespace ${JSON.stringify(namespace)}`);
  if (name.length > 253 || !DNS_SUBDOMAIN.test(name)) throw new Error(`invalid name ${JSON.stringify(name)}`);
}

/**
 * Marks an agent as ended for good when its cleanup begins: launch() refuses a UID with a tombstone,
 * so a stale or duplicate event arriving after the workspace is gone cannot start the agent again
 * (Kubernetes never reuses a UID). The sweeper prunes old tombstones.
 */
export async function writeTombstone(paths: WorkspacePaths, trigger: string): Promise<void> {
  await mkdir(paths.cleanedDir, { recursive: true, mode: 0o700 });
  if (await readOptional(paths.tombstone)) return;
  await writeFileAtomic(paths.tombstone, `${JSON.stringify({ uid: paths.uid, trigger, at: new Date().toISOString() })}\n`, 0o600);
}

export async function hasTombstone(paths: WorkspacePaths): Promise<boolean> {
  return (await readOptional(paths.tombstone)) !== undefined;
}

/**
 * What began the agent's cleanup, by its tombstone; undefined when none began. A tombstone that
 * cannot be read as one still says a cleanup began (its trigger then unknown).
 */
export async function tombstoneTrigger(paths: WorkspacePaths): Promise<string | undefined> {
  const raw = await readOptional(paths.tombstone);
  if (raw === undefined) return undefined;
  try {
    const trigger = (JSON.parse(raw.toString('utf8')) as { trigger?: unknown }).trigger;
    return typeof trigger === 'string' && trigger !== '' ? trigger : 'Unknown';
  } catch {
    return 'Unknown';
  }
}

/** Removes tombstones older than `maxAgeMs`; returns how many. */
export async function pruneTombstones(root: string, maxAgeMs: number, nowMs = Date.now()): Promise<number> {
  const { cleanedDir } = nodePaths(root);
  let names: string[];
  try {
    names = await readdir(cleanedDir);
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return 0;
    throw err;
  }
  let pruned = 0;
  for (const name of names) {
    const path = join(cleanedDir, name);
    try {
      if (nowMs - (await stat(path)).mtimeMs < maxAgeMs) continue;
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') continue;
      throw err;
    }
    await rm(path, { force: true, recursive: true });
    pruned++;
  }
  return pruned;
}
