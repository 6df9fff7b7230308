/** What a node can see of an agent: its tmux session and the files in its workspace. */
import { exists, readHead, readOptional } from './files.js';
import { statOutput } from './capture.js';
import { sandboxStarted } from './launcher.js';
import { findPane, listPanes, sessionNameFor, uidFromSessionName, type PaneInfo } from './tmux.js';
import { readAgentRecord, workspacePaths, type AgentRecord, type WorkspacePaths } from './workspace.js';

export interface SessionObservation {
  uid: string;
  sessionName: string;
  workspaceExists: boolean;
  /** The tmux session exists (possibly with its pane dead: remain-on-exit keeps it inspectable). */
  sessionExists: boolean;
  /** The session exists and its command is still running. */
  sessionAlive: boolean;
  panePid?: number;
  /** The launcher was released: the command was (or is being) started. */
  started: boolean;
  exited: boolean;
  /** The command's exit status (128+N when killed by signal N), from exit-code or else from tmux. */
  exitCode?: number;
  /** Why the command could not be started (see LAUNCH_EXIT), when it could not. */
  launchError?: string;
  /** Started, not known to have exited, and the session is gone (tmux server killed, node rebooted). */
  lost: boolean;
  outputBytes: number;
  /** When the capture last wrote (output.log, then the tail it is writing), once the session printed something. */
  lastOutputAt?: string;
  /**
   * When the command was started: agent.json's record of its release, else (a sidecar that died
   * between the release and that record, the command ended before it came back) when its exec step ran.
   */
  startTime?: string;
  record?: AgentRecord;
  /** How far its launch got (launchProgress). */
  launch: LaunchProgress;
}

export interface ObservedFacts {
  workspaceExists: boolean;
  record?: AgentRecord;
  goPresent: boolean;
  exitCodeText?: string;
  launchErrorText?: string;
  pane?: PaneInfo;
  output?: { bytes: number; mtimeMs: number };
  /** When the exec step inside the sandbox last wrote exec-status (just before it ran the command), once it started. */
  execStartedAtMs?: number;
}

/**
 * How far an agent's launch got, by the mark each step of launch() leaves on the node, in order:
 *  - none: no workspace;
 *  - begun: a workspace without agent.json (prepared in part);
 *  - workspace: prepared (agent.json, the `go` file), no session yet;
 *  - session: the session runs the launcher, which waits on its gate FIFO;
 *  - remain-on-exit: the session keeps its pane when the command ends;
 *  - pipe-pane: output capture is attached;
 *  - release: the launcher took its go (the `go` file is gone) but the start is not recorded;
 *  - done: the start is recorded, or the command ran and ended, or it can never run (the session
 *    died before its go): nothing is left to launch.
 * Anything but none and done is a launch interrupted part-way (a crash): launch() resumes it.
 */
export const LAUNCH_PROGRESS = ['none', 'begun', 'workspace', 'session', 'remain-on-exit', 'pipe-pane', 'release', 'done'] as const;
export type LaunchProgress = (typeof LAUNCH_PROGRESS)[number];

/** The launch progress the facts show (pure). */
export function launchProgress(f: ObservedFacts): LaunchProgress {
  if (f.exitCodeText !== undefined || f.launchErrorText !== undefined) return 'done';
  // A session without agent.json was not started by launch(): never adopted.
  if (!f.record) return f.pane ? 'done' : f.workspaceExists ? 'begun' : 'none';
  const pane = f.pane;
  if (!f.goPresent) return f.record.startedAt || !pane || pane.dead ? 'done' : 'release';
  if (!pane) return 'workspace';
  if (pane.dead) return 'done';
  if (pane.piped) return 'pipe-pane';
  return pane.remainOnExit ? 'remain-on-exit' : 'session';
}

function parseExitCode(text: string | undefined): number | undefined {
  const t = text?.trim();
  return t && /^\d{1,3}$/.test(t) ? Number(t) : undefined;
}

/** Derives the observation from raw facts (pure). */
export function interpretObservation(uid: string, f: ObservedFacts): SessionObservation {
  const pane = f.pane;
  const fileCode = parseExitCode(f.exitCodeText);
  const paneCode = pane?.dead ? (pane.deadSignal ? 128 + pane.deadSignal : pane.deadStatus) : undefined;
  const exited = fileCode !== undefined || pane?.dead === true;
  const started = f.record !== undefined && !f.goPresent;
  const exitCode = fileCode ?? paneCode;
  // Only where nothing will record it any more (the launch is done): a resume after the release records it itself.
  const unrecorded = started && !f.record?.startedAt && launchProgress(f) === 'done';
  const startTime = f.record?.startedAt ?? (unrecorded && f.execStartedAtMs !== undefined ? new Date(f.execStartedAtMs).toISOString() : undefined);
  let launchError = f.launchErrorText?.trim() || undefined;
  if (!launchError && exited && !started && f.record !== undefined) {
    launchError = `the session ended before the command was started${exitCode === undefined ? '' : ` (status ${exitCode})`}`;
  }
  return {
    uid,
    sessionName: sessionNameFor(uid),
    workspaceExists: f.workspaceExists,
    sessionExists: pane !== undefined,
    sessionAlive: pane !== undefined && !pane.dead,
    ...(pane ? { panePid: pane.panePid } : {}),
    started,
    exited,
    ...(exitCode !== undefined ? { exitCode } : {}),
    ...(launchError ? { launchError } : {}),
    lost: started && !exited && pane === undefined,
    outputBytes: f.output?.bytes ?? 0,
    ...(f.output && f.output.bytes > 0 ? { lastOutputAt: new Date(f.output.mtimeMs).toISOString() } : {}),
    ...(startTime ? { startTime } : {}),
    ...(f.record ? { record: f.record } : {}),
    launch: launchProgress(f),
  };
}

/** Enough of exec-status for its first line (`started`). */
const EXEC_STATUS_HEAD_BYTES = 64;

/**
 * When the agent's exec step ran (epoch ms): the mtime of exec-status once it says `started`. The
 * launcher (root) opens it and the exec step writes it just before it closes it and execs the
 * command, which never holds it: the agent cannot move it.
 */
export async function execStartedAtMs(paths: WorkspacePaths): Promise<number | undefined> {
  const status = await readHead(paths.execStatus, EXEC_STATUS_HEAD_BYTES);
  return status && sandboxStarted(status.head.toString('utf8')) ? status.mtimeMs : undefined;
}

/** Gathers the facts about one agent from tmux and its workspace. */
export async function observeFacts(root: string, uid: string): Promise<ObservedFacts> {
  // Files after tmux: the exit-code file is written before the pane dies, so a dead pane always
  // comes with its exit-code when the launcher got that far.
  const pane = await findPane(root, sessionNameFor(uid));
  return { ...(await observeFiles(root, uid)), ...(pane ? { pane } : {}) };
}

/** The facts about one agent its workspace holds (all but the pane; read them after the pane). */
export async function observeFiles(root: string, uid: string): Promise<Omit<ObservedFacts, 'pane'>> {
  const paths = workspacePaths(root, uid);
  const [workspaceExists, record, goPresent, exitCode, launchError, output] = await Promise.all([
    exists(paths.dir),
    readAgentRecord(paths),
    exists(paths.go),
    readOptional(paths.exitCode),
    readOptional(paths.launchError),
    statOutput(paths.dir),
  ]);
  // Only for a start agent.json does not record: the exec step writes the file while we read it.
  const execStarted = record && !record.startedAt && !goPresent ? await execStartedAtMs(paths) : undefined;
  return {
    workspaceExists,
    goPresent,
    ...(record ? { record } : {}),
    ...(exitCode ? { exitCodeText: exitCode.toString('utf8') } : {}),
    ...(launchError ? { launchErrorText: launchError.toString('utf8') } : {}),
    ...(output ? { output } : {}),
    ...(execStarted !== undefined ? { execStartedAtMs: execStarted } : {}),
  };
}

export async function observeSession(root: string, uid: string): Promise<SessionObservation> {
  return interpretObservation(uid, await observeFacts(root, uid));
}

export interface SessionListing extends PaneInfo {
  uid: string;
}

/** The agent sessions on the node's tmux server (sessions not named `agent-<uid>` are ignored). */
export async function listSessions(root: string): Promise<SessionListing[]> {
  const seen = new Set<string>();
  const out: SessionListing[] = [];
  for (const pane of await listPanes(root)) {
    const uid = uidFromSessionName(pane.sessionName);
    if (!uid || seen.has(uid)) continue;
    seen.add(uid);
    out.push({ ...pane, uid });
  }
  return out;
}
