/**
 * Starts an agent's tmux session (docs/architecture.md lifecycle step 4), idempotently by UID.
 *
 * Order, so that the whole output is captured from the first byte:
 *   prepare the state directory (the agent's uid, its scratch/ and home/, the prompt read-only for
 *   it, launch files, the `go` file, agent.json last)
 *   -> new-session running the launcher (which makes the `gate` FIFO and blocks on it),
 *      remain-on-exit, pipe-pane to output.log: one tmux client call (the server runs the chain in
 *      order, stopping at a failure)
 *   -> the report channel opened (sandboxed: the sidecar listens on the agent's socket)
 *   -> release the launcher (`go` into the gate; the `go` file is removed, here and by the launcher).
 * So the sidecar spawns two processes per launch: the read of the panes that decides it (shared
 * with whoever reads them meanwhile; the caller's when it passes `observed`, and counted as the
 * caller's then) and that tmux client (spawn.ts counts them).
 * A crash between any two steps converges on the next launch(): the `go` file's presence means the
 * command never ran, so the session can be finished or recreated; its absence means it ran, so
 * nothing is ever started twice. Each step leaves a mark (observe.ts launchProgress), and the
 * sidecar calls launch() again for every Agent whose marks show a launch part-way.
 */
import { constants } from 'node:fs';
import { chmod, chown, mkdir, open, rm, writeFile } from './boundedFs.js';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { AGENT_ENV, type LimitController } from '../../api/constants.js';
import { captureLimits, captureScript, DEFAULT_OUTPUT_MAX_BYTES, type CaptureLimits } from './capture.js';
import { crashPoint } from './crashPoint.js';
import { expandArgs } from './expand.js';
import { errnoOf, exists, writeFileAtomic } from './files.js';
import { EXEC_ARGV0, EXEC_SCRIPT, LAUNCHER_ARGV0, LAUNCHER_SCRIPT } from './launcher.js';
import { createLeaf, leafOf, limitFiles, type Limits } from './cgroup.js';
import { checkTraversable, joinCgroupArgv, sandboxArgv, type NodeSandbox } from './sandbox.js';
import { allocateUid, readSandboxUid } from './uids.js';
import { execStartedAtMs, interpretObservation, launchProgress, observeFacts, observeFiles, type ObservedFacts, type SessionObservation } from './observe.js';
import { withSpawnOp } from './spawn.js';
import { baseEnvironment, findPane, killSession, listSessionPanes, paneTarget, parsePanes, pipeCommand, sessionNameFor, tmuxChainOk, TmuxError, type PaneInfo, type TmuxCommand } from './tmux.js';
import { waitFor, withKeyLock } from './wait.js';
import { assertObjectRef, hasTombstone, readAgentRecord, sha256Hex, workspacePaths, writeAgentRecord, type WorkspacePaths } from './workspace.js';

export interface LaunchOptions {
  /** The node root (workspaces, tmux socket). */
  root: string;
  uid: string;
  namespace: string;
  name: string;
  /** argv; `$(VAR)` references to the env are expanded (Kubernetes semantics). */
  command: readonly string[];
  /**
   * Final env values in definition order: AGENT_REPORT_SOCKET or AGENT_REPORT_URL and AGENT_REPORT_TOKEN, and the spec's env,
   * already resolved and expanded (expandEnv; only the caller knows which values came from valueFrom).
   * AGENT_NAME, AGENT_NAMESPACE, AGENT_UID and AGENT_PROMPT_FILE are set here and may not be given.
   */
  env: Readonly<Record<string, string>>;
  /** Absolute; default: the workspace's scratch/. */
  workingDir?: string;
  prompt: Buffer | string;
  promptOnStdin?: boolean;
  /** Directory holding the agent-operator command; prepended to PATH (read-only in the sandbox). */
  binDir: string;
  /** The node's sandbox and the range the agent's uid comes from (see sandbox.ts, uids.ts). */
  sandbox: NodeSandbox;
  /** spec.resources.limits, parsed: written into the agent's cgroup where its controllers exist. */
  limits?: Limits;
  /**
   * Sandboxed: listens on the agent's report channel (its directory and the agent's gid), before the
   * command is released, at every launch() (a resumed one too). Idempotent.
   */
  openChannel?: (dir: string, gid: number) => Promise<void>;
  /** The most of its output kept on the node (capture.ts). Default DEFAULT_OUTPUT_MAX_BYTES. */
  outputMaxBytes?: number;
  logger: Logger;
  /** Bound for the launcher to take its go signal (each tmux call has its own timeout). Default 10 s. */
  timeoutMs?: number;
  /**
   * The facts the caller decided this launch on, observed just before (observeFacts), so they are
   * not read twice. Only for a caller that runs one launch or cleanup of an agent at a time (the
   * sidecar's work queue); default: observed here, under the agent's lock.
   */
  observed?: ObservedFacts;
}

export interface LaunchResult {
  /** This call let the command run (false: it was already started, had exited, was lost, or was cleaned up). */
  started: boolean;
  /** A tombstone exists (its cleanup has begun): the agent is never started again. */
  tombstoned: boolean;
  /** Limits asked for that this node's cgroup cannot enforce (no such controller). */
  limitsNotEnforced?: LimitController[];
  sessionName: string;
  observation: SessionObservation;
  /** What the observation is made of, as the call left the agent: for the caller's next decision, without reading it again. */
  facts: ObservedFacts;
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const SET_HERE = [AGENT_ENV.name, AGENT_ENV.namespace, AGENT_ENV.uid, AGENT_ENV.promptFile] as const;
const SESSION_SIZE = { columns: '200', rows: '50' };

/** The variables the platform sets for every agent from its identity. */
export function platformEnv(root: string, uid: string, namespace: string, name: string): Record<string, string> {
  return {
    [AGENT_ENV.name]: name,
    [AGENT_ENV.namespace]: namespace,
    [AGENT_ENV.uid]: uid,
    [AGENT_ENV.promptFile]: workspacePaths(root, uid).prompt,
  };
}

export interface ComposedLaunch {
  /** Set on the tmux session (`new-session -e`): every process tmux starts in it carries them, the AGENT_UID marker included. */
  sessionEnv: Record<string, string>;
  /** Exported by the launcher before it execs the command, in this order (HOME first: the spec may set its own). */
  commandEnv: [string, string][];
  argv: string[];
}

/** Validates the inputs and computes the session env, the command env and the expanded argv (pure). */
export function composeLaunch(o: {
  root: string;
  uid: string;
  namespace: string;
  name: string;
  command: readonly string[];
  env: Readonly<Record<string, string>>;
  binDir: string;
  basePath: string;
}): ComposedLaunch {
  assertObjectRef(o.namespace, o.name);
  if (o.command.length === 0) throw new Error('command must have at least one element');
  if (!o.binDir.startsWith('/') || o.binDir.includes(':')) throw new Error(`binDir must be an absolute path without ':': ${o.binDir}`);
  for (const [k, v] of Object.entries(o.env)) {
    if (!ENV_NAME.test(k)) throw new Error(`invalid environment variable name ${JSON.stringify(k)}`);
    if ((SET_HERE as readonly string[]).includes(k)) throw new Error(`environment variable ${k} is set by the platform`);
    if (v.includes('\0')) throw new Error(`environment variable ${k} contains a NUL byte`);
  }
  const platform = platformEnv(o.root, o.uid, o.namespace, o.name);
  const full: Record<string, string> = { ...platform, ...o.env };
  const argv = expandArgs(o.command, full);
  argv.forEach((a, i) => {
    if (a.includes('\0')) throw new Error(`command[${i}] contains a NUL byte`);
  });
  const sessionEnv: Record<string, string> = { ...platform, PATH: `${o.binDir}:${o.basePath}` };
  for (const k of [AGENT_ENV.reportSocket, AGENT_ENV.reportUrl, AGENT_ENV.reportToken]) {
    const v = o.env[k];
    if (v !== undefined) sessionEnv[k] = v;
  }
  const commandEnv = Object.entries({ HOME: workspacePaths(o.root, o.uid).home, ...full, PATH: `${o.binDir}:${o.env.PATH ?? o.basePath}` });
  return { sessionEnv, commandEnv, argv };
}

const seq = (i: number) => String(i).padStart(4, '0');

/**
 * The launcher's argv (pure): the sandbox's prefix, then EXEC_SCRIPT (inside the sandbox) with the
 * working directory, the prompt to read stdin from ('' for none) and the command.
 */
export function launcherArgv(prefix: readonly string[], workingDir: string, stdinFrom: string, argv: readonly string[]): string[] {
  return [...prefix, '/bin/sh', '-c', EXEC_SCRIPT, EXEC_ARGV0, workingDir, stdinFrom, ...argv];
}

async function writeLaunchFiles(paths: WorkspacePaths, env: readonly [string, string][], argv: readonly string[]): Promise<void> {
  await rm(paths.launchDir, { recursive: true, force: true });
  const envDir = join(paths.launchDir, 'env');
  const argvDir = join(paths.launchDir, 'argv');
  await mkdir(envDir, { recursive: true, mode: 0o700 });
  await mkdir(argvDir, { recursive: true, mode: 0o700 });
  const put = (path: string, data: string) => writeFile(path, data, { mode: 0o600, flag: 'wx' });
  // Each value ended by a newline: the launcher reads them line by line (launcher.ts).
  await Promise.all([...env.map(([k, v], i) => put(join(envDir, seq(i)), `${k}=${v}\n`)), ...argv.map((a, i) => put(join(argvDir, seq(i)), `${a}\n`))]);
}

/** A directory owned by `id` (the agent's uid and gid), mode 0700. */
async function ownedDir(path: string, id: number | undefined): Promise<void> {
  await mkdir(path, { recursive: true, mode: 0o700 });
  if (id !== undefined) await chown(path, id, id);
}

/** The report channel's directory: root's, the agent's gid may enter it and connect, not write in it. */
async function channelDir(path: string, id: number): Promise<void> {
  await mkdir(path, { recursive: true, mode: 0o750 });
  await chown(path, 0, id);
  await chmod(path, 0o750);
}

/**
 * Everything the session needs on disk; agent.json is written last and marks the workspace prepared.
 * Sandboxed, the node root, agents/ and the state directory are 0711 (the agent's bwrap, running as
 * its uid, passes through them to bind its own scratch/ and home/, and can list or open nothing).
 */
async function prepareWorkspace(paths: WorkspacePaths, o: LaunchOptions, c: ComposedLaunch, output: CaptureLimits): Promise<LimitController[]> {
  const sandboxed = o.sandbox.host.mode !== 'none';
  if (sandboxed) await checkTraversable(paths.root, 'their workspaces');
  await mkdir(paths.dir, { recursive: true, mode: 0o700 });
  if (sandboxed) for (const d of [paths.root, paths.agentsDir, paths.dir]) await chmod(d, 0o711);
  const id = sandboxed ? await allocateUid(paths, o.sandbox.uids) : undefined;
  await ownedDir(paths.scratch, id);
  await ownedDir(paths.home, id);
  if (id !== undefined) await channelDir(paths.channel, id);
  // Readable by the agent's gid, writable by no one but root.
  await writeFileAtomic(paths.prompt, o.prompt, id === undefined ? 0o600 : 0o440);
  if (id !== undefined) await chown(paths.prompt, 0, id);
  await (await open(paths.output, 'a', 0o600)).close(); // never truncates what was captured
  await Promise.all([paths.execStatus, paths.sandboxLog, paths.launchError, paths.gate].map((f) => rm(f, { force: true })));
  const cg = o.sandbox.cgroups;
  if (sandboxed && !cg) throw new Error('sandbox: no cgroup for agents (the sidecar sets one up at start-up)');
  const notEnforced = cg ? await createLeaf(cg, o.uid, o.limits) : limitFiles(o.limits ?? {}, []).notEnforced;
  const prefix = [
    ...(cg ? joinCgroupArgv(leafOf(cg, o.uid)) : []),
    ...(id === undefined ? [] : sandboxArgv(o.sandbox.host, { uid: id, gid: id, writable: [paths.scratch, paths.home], readOnly: [paths.prompt, o.binDir], channel: paths.channel })),
  ];
  const workingDir = o.workingDir ?? paths.scratch;
  await writeLaunchFiles(paths, c.commandEnv, launcherArgv(prefix, workingDir, o.promptOnStdin === true ? paths.prompt : '', c.argv));
  await writeFileAtomic(paths.go, 'go\n', 0o600);
  const token = o.env[AGENT_ENV.reportToken];
  await writeAgentRecord(paths, {
    version: 1,
    uid: o.uid,
    namespace: o.namespace,
    name: o.name,
    sessionName: sessionNameFor(o.uid),
    ...(token !== undefined ? { reportTokenSha256: sha256Hex(token) } : {}),
    createdAt: new Date().toISOString(),
    output,
  });
  return notEnforced;
}

/** The session's pane as the last command of a chain lists it. */
function chainedPane(stdout: string, sessionName: string): PaneInfo {
  const pane = parsePanes(stdout).find((p) => p.sessionName === sessionName);
  if (!pane) throw new Error(`session ${sessionName} vanished while starting`);
  return pane;
}

/**
 * new-session running the launcher, remain-on-exit and output capture, in one tmux call; the pane,
 * or undefined when the session already existed (the server stops at that, running none of the rest).
 */
async function newSession(paths: WorkspacePaths, sessionName: string, sessionEnv: Record<string, string>, limits: CaptureLimits): Promise<PaneInfo | undefined> {
  const create = [
    'new-session',
    '-d',
    '-s',
    sessionName,
    '-x',
    SESSION_SIZE.columns,
    '-y',
    SESSION_SIZE.rows,
    '-c',
    paths.dir,
    ...Object.entries(sessionEnv).flatMap(([k, v]) => ['-e', `${k}=${v}`]),
    '--',
    '/bin/sh',
    '-c',
    LAUNCHER_SCRIPT,
    LAUNCHER_ARGV0,
    paths.dir,
  ];
  try {
    return chainedPane(await tmuxChainOk(paths.root, [create, ...captureCommands(paths, sessionName, limits), listSessionPanes(sessionName)]), sessionName);
  } catch (err) {
    if (err instanceof TmuxError && /duplicate session/i.test(err.stderr)) return undefined;
    throw err;
  }
}

/** remain-on-exit, then the output capture unless one is attached (pipe-pane toggles an existing pipe off). */
function captureCommands(paths: WorkspacePaths, sessionName: string, limits: CaptureLimits, pane?: PaneInfo): TmuxCommand[] {
  return [
    ['set-option', '-w', '-t', paneTarget(sessionName), 'remain-on-exit', 'on'],
    ...(pane?.piped ? [] : [['pipe-pane', '-O', '-t', pane?.paneId ?? paneTarget(sessionName), pipeCommand(captureScript(paths.dir, limits))]]),
  ];
}

/** Finishes setting up a session that exists (a resumed start, each step checked first): one tmux call. */
async function finishSession(paths: WorkspacePaths, sessionName: string, limits: CaptureLimits, pane: PaneInfo | undefined): Promise<PaneInfo> {
  if (!pane) throw new Error(`session ${sessionName} vanished while starting`);
  return chainedPane(await tmuxChainOk(paths.root, [...captureCommands(paths, sessionName, limits, pane), listSessionPanes(sessionName)]), sessionName);
}

/**
 * Opens the launcher's gate without blocking and writes the go line. ENXIO: the launcher is not
 * reading yet; ENOENT: it has not made the gate yet, or it took its go (then `go` is gone too).
 */
async function release(paths: WorkspacePaths, timeoutMs: number): Promise<void> {
  await waitFor(
    async () => {
      let fh;
      try {
        fh = await open(paths.gate, constants.O_WRONLY | constants.O_NONBLOCK);
      } catch (err) {
        if (errnoOf(err) === 'ENXIO') return undefined;
        if (errnoOf(err) === 'ENOENT') return (await exists(paths.go)) ? undefined : true;
        throw err;
      }
      try {
        await fh.write('go\n');
      } finally {
        await fh.close();
      }
      // Released: the launcher is reading the go line. It removes `go` too, once it runs again; done
      // here as well, the facts the caller reads next say released, not a launch half-way.
      await rm(paths.go, { force: true });
      return true;
    },
    // A probe is one open(), so probing often is cheap; the launcher needs a fork and a mkfifo to get
    // there, a few ms, and many more when ten launches share two cores: a long pause would be pure delay.
    { timeoutMs, intervalMs: 2, maxIntervalMs: 10, what: 'the launcher to wait for its go signal' },
  );
}

/**
 * The output cap the capture runs with: the one recorded when the workspace was prepared, which
 * cleanup accounts with (a workspace prepared by an older sidecar gets it recorded now, before any
 * output is captured with it).
 */
async function recordedCaptureLimits(paths: WorkspacePaths, outputMaxBytes: number): Promise<CaptureLimits> {
  const record = await readAgentRecord(paths);
  if (record?.output) return record.output;
  const limits = captureLimits(outputMaxBytes);
  if (record) await writeAgentRecord(paths, { ...record, output: limits });
  return limits;
}

/** Go, then the record of the start (a resumed start repeats neither). */
async function releaseAndRecord(paths: WorkspacePaths, timeoutMs: number): Promise<void> {
  await release(paths, timeoutMs);
  crashPoint('launch:release');
  const record = await readAgentRecord(paths);
  if (!record || record.startedAt) return;
  // A resume after the release: when its exec step ran, as the node reports it meanwhile (observe.ts).
  const execAt = await execStartedAtMs(paths);
  await writeAgentRecord(paths, { ...record, startedAt: new Date(execAt ?? Date.now()).toISOString() });
}

type Start = 'fresh' | 'finish' | 'recreate' | 'none';

/**
 * What to do given how far a launch got (pure; observe.ts launchProgress). The `go` file is the witness:
 * present, the command never ran, so the start can be redone or finished; absent, it ran, and only
 * the record of its start may be missing.
 */
export function decideStart(f: ObservedFacts): Start {
  switch (launchProgress(f)) {
    case 'none':
    case 'begun':
    case 'workspace':
      return 'fresh';
    case 'done':
      // The session died before its go: its command never ran, so a new session may run it.
      return f.record && f.goPresent && f.pane?.dead ? 'recreate' : 'none';
    default:
      return 'finish';
  }
}

export async function launch(o: LaunchOptions): Promise<LaunchResult> {
  const paths = workspacePaths(o.root, o.uid);
  const sessionName = sessionNameFor(o.uid);
  const timeoutMs = o.timeoutMs ?? 10_000;
  const c = composeLaunch({ ...o, basePath: baseEnvironment().PATH ?? '' });
  const log = o.logger.child({ uid: o.uid, session: sessionName });
  return withSpawnOp('launch', () =>
    withKeyLock(`${paths.root}\0${o.uid}`, async () => {
      if (await hasTombstone(paths)) {
        log.info('not launching: the agent was already cleaned up');
        const now = await observeFacts(o.root, o.uid);
        return { started: false, tombstoned: true, sessionName, observation: interpretObservation(o.uid, now), facts: now };
      }
      const facts = o.observed ?? (await observeFacts(o.root, o.uid));
      const decision = decideStart(facts);
      log.debug({ decision }, 'launch');
      if (decision === 'none') return { started: false, tombstoned: false, sessionName, observation: interpretObservation(o.uid, facts), facts };
      if (decision === 'recreate') {
        log.info('the session died before its command was released; recreating it');
        await killSession(o.root, sessionName);
      }
      let notEnforced: LimitController[] = [];
      let pane = facts.pane;
      const outputMaxBytes = o.outputMaxBytes ?? DEFAULT_OUTPUT_MAX_BYTES;
      if (decision !== 'finish') {
        const limits = captureLimits(outputMaxBytes);
        notEnforced = await prepareWorkspace(paths, o, c, limits);
        crashPoint('launch:workspace');
        pane = await newSession(paths, sessionName, c.sessionEnv, limits);
        if (!pane) {
          log.info('session already existed');
          pane = await finishSession(paths, sessionName, limits, await findPane(o.root, sessionName));
        }
      } else pane = await finishSession(paths, sessionName, await recordedCaptureLimits(paths, outputMaxBytes), pane);
      crashPoint('launch:session');
      if (o.openChannel) {
        const id = await readSandboxUid(paths);
        if (id === undefined) throw new Error('report channel: the agent has no sandbox uid');
        await o.openChannel(paths.channel, id);
      }
      await releaseAndRecord(paths, timeoutMs);
      log.info('agent session started');
      // The pane as the session's setup left it; the files as they are now (read after it).
      const started = { ...(await observeFiles(o.root, o.uid)), pane };
      return {
        started: true,
        tombstoned: false,
        sessionName,
        observation: interpretObservation(o.uid, started),
        facts: started,
        ...(notEnforced.length > 0 ? { limitsNotEnforced: notEnforced } : {}),
      };
    }),
  );
}
