/**
 * Report intake: the node's report endpoint (report/server.ts) wired to the agents' records. A report
 * is taken for the agent whose socket it came in on (sandboxed) or whose token it carries
 * (unsandboxed), written to its journal first, then kept on its record and its Agent enqueued so
 * planAgentOnNode writes it into status. After a restart the records are rebuilt from the journals.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { AGENT_ENV, REPORT_SOCKET_NAME, SANDBOX_REPORT_DIR } from '../api/constants.js';
import { describeError } from '../kube/errors.js';
import type { CapKind, ReportCaps } from '../report/limits.js';
import type { CallInput, CallKind } from '../report/protocol.js';
import { startReportServer, type AgentContext, type ReportServer } from '../report/server.js';
import { acceptsReports, type AgentRecord, type AgentRecords } from './agentRecord.js';
import { addFinding, latestReport, replayReports } from './reports.js';
import { findArchiveLocation } from './runtime/archive.js';
import { readFile, writeFile } from './runtime/boundedFs.js';
import { exists } from './runtime/files.js';
import { readSandboxUid } from './runtime/uids.js';
import { hasTombstone, listWorkspaces, sha256Hex, workspacePaths, type WorkspaceEntry } from './runtime/workspace.js';

/** A report's agent, as the endpoint sees it. */
export interface ReportContext extends AgentContext {
  /** namespace/name of its Agent. */
  key: string;
}

export interface ReportIntakeOptions {
  root: string;
  archiveDir: string;
  records: AgentRecords;
  logger: Logger;
  /** Sandboxed agents report on their own socket; unsandboxed ones on loopback with a token. */
  sandboxed: boolean;
  /** Loopback port; undefined: the one this node used before, else a free one. */
  port?: number;
  caps?: ReportCaps;
  journalMaxBytes?: number;
  /** The Agent has something new for its status. */
  enqueue: (key: string) => void;
  onCapped: (cap: CapKind) => void;
  onCall: <K extends CallKind>(ctx: ReportContext, kind: K, input: CallInput<K>) => Promise<object>;
}

export class ReportIntake {
  private server: ReportServer | undefined;
  private readonly log: Logger;

  constructor(private readonly o: ReportIntakeOptions) {
    this.log = o.logger;
  }

  /** The endpoint's base URL, once listening. */
  get url(): string | undefined {
    return this.server?.url;
  }

  /** Rebuilds tokens and report state from the workspaces of agents started before this process; which they are. */
  async rediscover(): Promise<WorkspaceEntry[]> {
    const workspaces = await listWorkspaces(this.o.root);
    for (const w of workspaces) {
      const r = this.o.records.ensure(w.uid);
      if (w.record?.reportTokenSha256) r.tokenSha256 = w.record.reportTokenSha256;
      await this.replay(r, workspacePaths(this.o.root, w.uid));
    }
    if (workspaces.length > 0) this.log.info({ workspaces: workspaces.length }, 'rediscovered agents on this node');
    return workspaces;
  }

  /** Starts listening, on loopback at the port this node used before (running sessions carry its URL). */
  async start(): Promise<void> {
    const statePath = join(this.o.root, 'sidecar.json');
    let port = this.o.port;
    if (port === undefined) {
      const saved = await readFile(statePath, 'utf8').then(
        (t) => JSON.parse(t) as { reportPort?: number },
        (): { reportPort?: number } => ({}),
      );
      port = saved.reportPort ?? 0;
    }
    const records = this.o.records;
    this.server = await startReportServer<ReportContext>({
      host: '127.0.0.1',
      port,
      logger: this.log,
      authenticate: (token) => contextOf(this.o.root, records.byToken(sha256Hex(token))),
      agentContext: (uid) => contextOf(this.o.root, records.get(uid)),
      ...(this.o.caps ? { caps: this.o.caps } : {}),
      onCapped: this.o.onCapped,
      ...(this.o.journalMaxBytes !== undefined ? { journalMaxBytes: this.o.journalMaxBytes } : {}),
      onStatus: async (ctx, report, at) => {
        const r = records.get(ctx.uid);
        if (!r) return; // its Agent went while the report was written: the journal has it
        r.report = latestReport(report, at, r.report);
        this.o.enqueue(ctx.key);
      },
      onFinding: async (ctx, finding, at) => {
        const r = records.get(ctx.uid);
        if (!r) return;
        r.findings = addFinding(r.findings, finding, at);
        this.o.enqueue(ctx.key);
      },
      onCall: this.o.onCall,
    });
    await writeFile(statePath, `${JSON.stringify({ reportPort: this.server.port })}\n`);
  }

  /**
   * Listens again on the report socket of every agent found on the node that is not being cleaned
   * up (of those rediscover found): its sandbox sees the directory, so the new socket is where its old one was.
   */
  async reopenChannels(workspaces: readonly WorkspaceEntry[]): Promise<void> {
    if (!this.o.sandboxed) return;
    for (const w of workspaces) {
      const paths = workspacePaths(this.o.root, w.uid);
      const gid = await readSandboxUid(paths);
      // Agents launched before report sockets existed have no channel directory: they keep their token.
      if (gid === undefined || (await hasTombstone(paths)) || !(await exists(paths.channel))) continue;
      const who = { namespace: w.record?.namespace, name: w.record?.name, uid: w.uid };
      try {
        await this.running().openChannel(w.uid, paths.channel, gid);
        this.log.info(who, 'report channel open again');
      } catch (err) {
        // Its launch (resumed) opens it again or fails visibly on the Agent; a workspace without a channel is no reason to stop the node.
        this.log.warn({ ...who, err: describeError(err) }, 'could not reopen a report channel');
      }
    }
  }

  /**
   * How the agent reports, as environment for its session. Sandboxed: its own socket, and no token
   * (nothing to steal). Unsandboxed: the loopback URL and a token made for it now.
   */
  channelEnv(r: AgentRecord): Record<string, string> {
    if (this.o.sandboxed) return { [AGENT_ENV.reportSocket]: `${SANDBOX_REPORT_DIR}/${REPORT_SOCKET_NAME}` };
    const token = randomBytes(32).toString('base64url');
    r.tokenSha256 = sha256Hex(token);
    return { [AGENT_ENV.reportUrl]: this.running().url, [AGENT_ENV.reportToken]: token };
  }

  /** Opens the agent's socket in its channel directory (launch.ts calls it once the directory is the agent's). */
  openChannel(uid: string, dir: string, gid: number): Promise<string> {
    return this.running().openChannel(uid, dir, gid);
  }

  closeChannel(uid: string): Promise<void> {
    return this.server?.closeChannel(uid) ?? Promise.resolve();
  }

  /** Resolves once every report accepted for the agent is written (cleanup waits before archiving). */
  whenIdle(uid: string): Promise<void> {
    return this.running().whenIdle(uid);
  }

  /** After a crash between cleanup and its status write: what the archive holds is the truth. */
  async recoverFromArchive(r: AgentRecord): Promise<void> {
    const loc = await findArchiveLocation(this.o.archiveDir, r.uid);
    if (loc) await this.replay(r, { reports: join(loc.dir, 'reports.jsonl'), findings: join(loc.dir, 'findings.jsonl') });
  }

  async close(): Promise<void> {
    await this.server?.close();
  }

  private async replay(r: AgentRecord, files: { reports: string; findings: string }): Promise<void> {
    const replayed = await replayReports(files);
    if (replayed.report) r.report = replayed.report;
    if (replayed.findings) r.findings = replayed.findings;
  }

  private running(): ReportServer {
    if (!this.server) throw new Error('the report endpoint is not started');
    return this.server;
  }
}

/** The endpoint's view of an agent: known once its Agent is (its key), taking reports until its cleanup begins. */
function contextOf(root: string, r: AgentRecord | undefined): ReportContext | undefined {
  if (!r?.key) return undefined;
  return { uid: r.uid, key: r.key, workspaceDir: workspacePaths(root, r.uid).dir, acceptingReports: acceptsReports(r.state) };
}
