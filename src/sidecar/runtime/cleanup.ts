/**
 * Node-side cleanup of one agent (docs/architecture.md lifecycle step 9), in order:
 *   a. stop its processes (terminate.ts);
 *   b. wait for tmux to mark the pane dead (tmux only does so once every byte read from the pane has
 *      been handed to the pipe-pane writer), then kill the session (never the shared server);
 *      an agent that had exited costs two spawns: the read of the panes and kill-session;
 *   c. flush: wait until no process holds output.log, reports.jsonl or findings.jsonl open;
 *   d. archive (verified, atomic) BEFORE deleting anything, then delete the prompt and the workspace;
 *   e. verify that no process is left: the agent's cgroup reports `populated 0` (a kernel fact), and
 *      no process carries its marker (the second net); record its CPU time and peak memory, then
 *      remove the cgroup;
 *   f. return the record (also written into the archive).
 * Every step looks before it acts, so a re-run after a crash anywhere converges, and a re-run after
 * completion changes nothing and says so truthfully. A failing step is recorded in `errors` and the
 * following steps still run where that is safe: the workspace is kept when its logs could not be
 * archived, so a later run can still archive them.
 */
import { FileOperationTimeoutError, realpath, rm, unlink } from './boundedFs.js';
import { basename, join } from 'node:path';
import type { Logger } from 'pino';
import type { CleanupRecord } from '../../api/agent.js';
import { DEFAULTS, LIMITS } from '../../api/constants.js';
import { archiveLocation, archiveSources, digestSources, findArchiveLocation, inspectArchive, removeStaleTemps, writeArchive, writeRecordOnce, type Manifest, type ManifestFile } from './archive.js';
import { ARCHIVED_TAIL_FILE, captureAccounting, readCaptureFiles, type CaptureAccounting } from './capture.js';
import { crashPoint } from './crashPoint.js';
import { withSpawnOp } from './spawn.js';
import { errorMessage, exists, type FileDigest } from './files.js';
import { execStartedAtMs } from './observe.js';
import { findMarkerProcesses, holdersOf } from './procfs.js';
import { terminateProcesses } from './terminate.js';
import { findPane, killSession, sessionNameFor } from './tmux.js';
import { withTimeout } from '../../kube/backoff.js';
import { waitFor, withKeyLock } from './wait.js';
import { leafOf, leafPids, leafUsage, populated, removeLeaf, type AgentCgroups, type LeafUsage } from './cgroup.js';
import { readSandboxUid, uidReleased } from './uids.js';
import { assertAgentUid, readAgentRecord, workspacePaths, writeTombstone } from './workspace.js';

export interface CleanupOptions {
  root: string;
  archiveDir: string;
  uid: string;
  /** Name the archive; default from agent.json; unknown: `<archive>/_orphans/<uid>/`. */
  namespace?: string;
  name?: string;
  /** SIGTERM to SIGKILL. Default DEFAULTS.gracePeriodSeconds. */
  gracePeriodSeconds?: number;
  /** Default DEFAULTS.keepLogs. false: nothing is archived. */
  keepLogs?: boolean;
  /** What ended the agent (recorded). */
  trigger: string;
  logger: Logger;
  /**
   * Awaited (bounded) after the processes are gone and before archiving: e.g. the report server's
   * whenIdle(uid), so a report still being written lands in the archive.
   */
  beforeArchive?: () => Promise<void>;
  /** The node's agent cgroups (see cgroup.ts); without them only the marker scan verifies. */
  cgroups?: AgentCgroups;
  timeouts?: Partial<CleanupTimeouts>;
}

export interface CleanupTimeouts {
  /** SIGKILL rounds. */
  killMs: number;
  /** For tmux to mark the pane dead once its processes are gone. */
  paneDeadMs: number;
  /** For every writer to close the log files. */
  flushMs: number;
  beforeArchiveMs: number;
}

const DEFAULT_TIMEOUTS: CleanupTimeouts = { killMs: 5_000, paneDeadMs: 5_000, flushMs: 10_000, beforeArchiveMs: 5_000 };

export type ArchiveAction = 'skip' | 'reuse' | 'create' | 'replace' | 'nothing' | 'unavailable';

/**
 * What to do about the archive (pure).
 *  - skip: logs are not kept;
 *  - reuse: a verified archive exists and the workspace (if still there) matches it;
 *  - create / replace: archive the workspace (replacing an invalid or outdated archive);
 *  - nothing: no archive and no workspace (never launched here, or archived and deleted by a run
 *    whose archive has since been removed; there is nothing left to save either way);
 *  - unavailable: the archive is invalid and the workspace is gone: it cannot be repaired.
 */
export function decideArchive(f: {
  keepLogs: boolean;
  archive: 'absent' | 'valid' | 'invalid';
  workspaceExists: boolean;
  /** The workspace holds content the valid archive lacks (see workspaceSupersedesArchive). */
  workspaceSupersedesArchive?: boolean;
}): ArchiveAction {
  if (!f.keepLogs) return 'skip';
  if (f.archive === 'valid') return f.workspaceExists && f.workspaceSupersedesArchive ? 'replace' : 'reuse';
  if (f.archive === 'invalid') return f.workspaceExists ? 'replace' : 'unavailable';
  return f.workspaceExists ? 'create' : 'nothing';
}

/**
 * Whether the workspace holds something a valid archive lacks (pure): a file that differs from its
 * manifest entry or is not listed. Missing files do not count: a run that crashed while deleting
 * the workspace leaves part of it, and that part must never replace the complete archive.
 */
export function workspaceSupersedesArchive(manifestFiles: readonly Pick<ManifestFile, 'name' | 'bytes' | 'sha256'>[], actual: ReadonlyMap<string, FileDigest | undefined>): boolean {
  const listed = new Map(manifestFiles.map((f) => [f.name, f]));
  for (const [name, digest] of actual) {
    if (!digest) continue;
    const m = listed.get(name);
    if (!m || m.bytes !== digest.bytes || m.sha256 !== digest.sha256) return true;
  }
  return false;
}

/** The workspace may go once its logs are safe or not wanted (pure). */
export function mayDeleteWorkspace(f: { keepLogs: boolean; logsArchived: boolean }): boolean {
  return !f.keepLogs || f.logsArchived;
}

/** Bounds the error list to what the status schema accepts (pure). */
export function boundErrors(errors: readonly string[]): string[] {
  const max = LIMITS.cleanupErrors;
  const clipped = errors.map((e) => (e.length > 1024 ? `${e.slice(0, 1021)}...` : e));
  return clipped.length > max ? [...clipped.slice(0, max - 1), `${clipped.length - max + 1} more errors not shown`] : clipped;
}

export async function cleanupAgent(o: CleanupOptions): Promise<CleanupRecord> {
  assertAgentUid(o.uid);
  const paths = workspacePaths(o.root, o.uid);
  return withSpawnOp('cleanup', () => withKeyLock(`${paths.root}\0${o.uid}`, () => runCleanup(o)));
}

async function runCleanup(o: CleanupOptions): Promise<CleanupRecord> {
  const startedAt = new Date();
  const paths = workspacePaths(o.root, o.uid);
  const sessionName = sessionNameFor(o.uid);
  const keepLogs = o.keepLogs ?? DEFAULTS.keepLogs;
  const timeouts = { ...DEFAULT_TIMEOUTS, ...o.timeouts };
  const log = o.logger.child({ uid: o.uid, session: sessionName, trigger: o.trigger });
  const errors: string[] = [];
  const step = async <T>(what: string, fn: () => Promise<T>, fallback: T): Promise<T> => {
    const t0 = Date.now();
    try {
      return await fn();
    } catch (err) {
      // A hung filesystem is the node's fault, not a fact about the agent: the whole cleanup is
      // retried with the queue's backoff (every step is idempotent) rather than recorded as done.
      if (err instanceof FileOperationTimeoutError) throw err;
      errors.push(`${what}: ${errorMessage(err)}`);
      log.warn({ err }, `cleanup step failed: ${what}`);
      return fallback;
    } finally {
      log.debug({ step: what, ms: Date.now() - t0 }, 'cleanup step');
    }
  };

  // First, so nothing can launch this agent again, even if this run crashes part-way.
  await step('write tombstone', () => writeTombstone(paths, o.trigger), undefined);
  crashPoint('cleanup:tombstone');
  const agentRecord = await step('read agent.json', () => readAgentRecord(paths), undefined);
  const namespace = o.namespace ?? agentRecord?.namespace;
  const name = o.name ?? agentRecord?.name;

  // (a) stop the agent
  const observed = await step('observe session', async () => ({ pane: await findPane(o.root, sessionName) }), undefined);
  const pane = observed?.pane;
  const sandboxUid = await step('read the sandbox uid', () => readSandboxUid(paths), undefined);
  const leaf = o.cgroups ? leafOf(o.cgroups, o.uid) : undefined;
  // Sandboxed, released (no `go` file) and the sandbox started: its launcher records the status and
  // ends by itself. A launcher not that far (a stop right after the release) is stopped with the rest,
  // or it would go on to join a cgroup this cleanup removes, or run the command after it.
  const launcherReleased =
    sandboxUid !== undefined &&
    !(await step('inspect the go file', () => exists(paths.go), true)) &&
    (await step('inspect the sandbox start', async () => (await execStartedAtMs(paths)) !== undefined, false));
  const term = await step(
    'stop processes',
    () =>
      terminateProcesses({
        root: o.root,
        uid: o.uid,
        ...(pane ? { pane: { pid: pane.panePid, alive: !pane.dead } } : {}),
        gracePeriodMs: (o.gracePeriodSeconds ?? DEFAULTS.gracePeriodSeconds) * 1000,
        killTimeoutMs: timeouts.killMs,
        sandboxed: launcherReleased,
        ...(leaf ? { leaf } : {}),
        logger: log,
      }),
    undefined,
  );
  crashPoint('cleanup:stop');
  if (term && term.remaining.length) {
    errors.push(`stop processes: ${term.remaining.length} process(es) survived SIGKILL: ${term.remaining.map((p) => `${p.pid} (${p.comm}, state ${p.state})`).join(', ')}`);
  }

  // (b) kill the session, once tmux has drained the pane into the pipe
  if (pane && !pane.dead) {
    await step(
      'wait for the pane to end',
      () =>
        waitFor(
          async () => {
            const p = await findPane(o.root, sessionName);
            return !p || p.dead ? true : undefined;
          },
          { timeoutMs: timeouts.paneDeadMs, what: 'tmux to mark the pane dead (its output drained)' },
        ),
      undefined,
    );
  }
  const sessionKilled = await step(
    'kill session',
    async () => {
      // kill-session ends the session or finds none (else it throws), and with the tombstone
      // written nothing starts one again: only a session never seen is looked for again.
      if (pane) await killSession(o.root, sessionName);
      return observed ? true : (await findPane(o.root, sessionName)) === undefined;
    },
    false,
  );
  crashPoint('cleanup:session');

  // (c) flush: every writer has closed the files we are about to copy
  const workspaceExists = await step('inspect workspace', () => exists(paths.dir), true);
  if (workspaceExists) {
    await step(
      'flush output',
      async () => {
        const dir = await realpath(paths.dir);
        const files = [paths.output, paths.reports, paths.findings].map((f) => join(dir, basename(f)));
        await waitFor(async () => ((await holdersOf(files)).length === 0 ? true : undefined), {
          timeoutMs: timeouts.flushMs,
          what: 'every writer to close output.log, reports.jsonl and findings.jsonl',
        });
      },
      undefined,
    );
  }
  crashPoint('cleanup:flush');
  if (o.beforeArchive && keepLogs) {
    const hook = o.beforeArchive;
    await step('wait for reports in flight', () => withTimeout(hook(), timeouts.beforeArchiveMs, 'the beforeArchive hook'), undefined);
  }

  // What the bounded capture saw, kept and dropped (capture.ts); its tail is archived as one file.
  const limits = agentRecord?.output;
  const capture: CaptureAccounting | undefined =
    limits && workspaceExists ? await step('account for the output', async () => captureAccounting(limits, await readCaptureFiles(paths.dir, limits)), undefined) : undefined;
  const output: Manifest['output'] = limits && capture ? { maxBytes: limits.maxBytes, totalBytes: capture.totalBytes, droppedBytes: capture.droppedBytes, truncated: capture.truncated } : undefined;
  if (output?.truncated) log.info({ output }, 'output went past its cap: head and tail kept');
  const sources = archiveSources(paths.dir, [{ name: ARCHIVED_TAIL_FILE, parts: (capture?.tail ?? []).map((n) => join(paths.dir, n)) }]);

  // (d) archive before deleting anything
  let manifest: Manifest | undefined;
  let archivePath: string | undefined;
  if (keepLogs) {
    await step(
      'archive logs',
      async () => {
        const known = namespace !== undefined && name !== undefined;
        const loc = (!known ? await findArchiveLocation(o.archiveDir, o.uid) : undefined) ?? archiveLocation(o.archiveDir, { uid: o.uid, ...(known ? { namespace, name } : {}) });
        await removeStaleTemps(loc);
        const existing = await inspectArchive(loc.dir);
        const newer = existing.state === 'valid' && workspaceExists ? workspaceSupersedesArchive(existing.manifest.files, await digestSources(sources)) : false;
        const action = decideArchive({ keepLogs, archive: existing.state, workspaceExists, workspaceSupersedesArchive: newer });
        log.debug({ action, existing: existing.state }, 'archive decision');
        if (action === 'reuse' && existing.state === 'valid') manifest = existing.manifest;
        else if (action === 'create' || action === 'replace') {
          manifest = await writeArchive({
            location: loc,
            sourceDir: paths.dir,
            sources,
            ...(output ? { output } : {}),
            uid: o.uid,
            ...(namespace !== undefined ? { namespace } : {}),
            ...(name !== undefined ? { name } : {}),
            trigger: o.trigger,
          });
        } else if (action === 'unavailable' && existing.state === 'invalid') {
          throw new Error(`the archive at ${loc.dir} fails verification (${existing.reason}) and the workspace is gone`);
        }
        if (manifest) archivePath = loc.dir;
      },
      undefined,
    );
  }
  crashPoint('cleanup:archive');
  const logsArchived = manifest !== undefined;
  const promptDeleted = await step(
    'delete prompt',
    async () => {
      await unlink(paths.prompt).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT' && err.code !== 'ENOTDIR') throw err;
      });
      return !(await exists(paths.prompt));
    },
    false,
  );
  crashPoint('cleanup:prompt');
  let workspaceDeleted = !(await step('inspect workspace', () => exists(paths.dir), true));
  if (!workspaceDeleted) {
    if (mayDeleteWorkspace({ keepLogs, logsArchived })) {
      workspaceDeleted = await step(
        'delete workspace',
        async () => {
          try {
            await rm(paths.dir, { recursive: true, force: true });
          } finally {
            uidReleased(); // its uid may be free from now on (allocateUid)
          }
          return !(await exists(paths.dir));
        },
        false,
      );
    } else {
      errors.push('delete workspace: kept, because its logs are not archived');
    }
  }

  crashPoint('cleanup:workspace');

  // (e) verify
  const remaining = await step('verify no processes remain', () => findMarkerProcesses(o.root, o.uid), undefined);
  if (remaining?.length) errors.push(`verify: ${remaining.length} process(es) with the agent's marker remain: ${remaining.map((p) => p.pid).join(', ')}`);
  let cgroupEmpty = true;
  let usage: LeafUsage = {};
  let cgroupRemoved: boolean | undefined;
  if (leaf) {
    cgroupEmpty = await step('verify the cgroup is empty', async () => (await populated(leaf)) !== true, false);
    if (!cgroupEmpty) errors.push(`verify: the agent's cgroup ${leaf} still holds processes (${[...(await leafPids(leaf).catch(() => []))].join(', ')})`);
    usage = await step('read the cgroup usage', () => leafUsage(leaf), {});
    cgroupRemoved = cgroupEmpty && (await step('remove the cgroup', () => removeLeaf(leaf), false));
  }

  // (f) the record
  const completedAt = new Date();
  const record: CleanupRecord = {
    trigger: o.trigger,
    startTime: startedAt.toISOString(),
    completionTime: completedAt.toISOString(),
    durationMilliseconds: completedAt.getTime() - startedAt.getTime(),
    sessionKilled,
    processesKilled: term?.signalled ?? 0,
    escalatedToSigkill: term?.escalatedToSigkill ?? false,
    promptDeleted,
    workspaceDeleted,
    logsArchived,
    ...(archivePath ? { archivePath } : {}),
    ...(manifest ? { archivedFiles: manifest.files.slice(0, LIMITS.archivedFiles).map(({ name: n, bytes, sha256 }) => ({ name: n, bytes, sha256 })) } : {}),
    verifiedNoProcesses: remaining !== undefined && remaining.length === 0 && cgroupEmpty,
    ...(usage.cpuSeconds !== undefined ? { cpuMilliseconds: Math.round(usage.cpuSeconds * 1000) } : {}),
    ...(usage.memoryPeakBytes !== undefined ? { memoryPeakBytes: usage.memoryPeakBytes } : {}),
    ...(cgroupRemoved !== undefined ? { cgroupRemoved } : {}),
    ...((manifest?.output ?? output) ? { output: manifest?.output ?? output } : {}),
    errors: boundErrors(errors),
  };
  if (archivePath) {
    const dir = archivePath;
    await step('write record into archive', () => writeRecordOnce(dir, record), false);
    record.errors = boundErrors(errors);
  }
  crashPoint('cleanup:record');
  log.info({ record }, 'agent cleaned up');
  return record;
}
