/**
 * The node sidecar: registers and heartbeats its AgentNode, watches the Agents bound to its node,
 * launches them in tmux, relays their reports into status, and cleans each one up from outside the
 * moment it ends. Sessions outlive the sidecar: after a restart it rediscovers them from the node.
 */
import { randomBytes } from 'node:crypto';
import { chmod, FileOperationTimeoutError, mkdir, readFile, registerFileOperationMetrics, writeFile } from './runtime/boundedFs.js';
import { join } from 'node:path';
import type { KubeConfig } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { Counter, Gauge, Histogram } from 'prom-client';
import type { Agent, CleanupRecord } from '../api/agent.js';
import { bytesOf, milliCpuOf } from '../api/quantity.js';
import type { Limits } from './runtime/cgroup.js';
import { AGENT_ENV, API_VERSION, AGENT_KIND, DEFAULTS, NODE_LABEL, REPORT_SOCKET_NAME, SANDBOX_REPORT_DIR, type LimitController } from '../api/constants.js';
import { backoffDelay, sleep } from '../kube/backoff.js';
import { describeError } from '../kube/errors.js';
import { runController } from '../kube/controllerLoop.js';
import { EventRecorder } from '../kube/events.js';
import { Informer, objectKey } from '../kube/informer.js';
import { AGENT_RESOURCE, agentClient, agentNodeClient, refOf, type KubeObject, type ResourceClient } from '../kube/resources.js';
import { WorkQueue } from '../kube/workqueue.js';
import { queueMetricsFor, reconcileObserver, type ReconcileMetrics } from '../observability/metrics.js';
import type { ReportCaps } from '../report/limits.js';
import { startReportServer, type AgentContext, type ReportServer } from '../report/server.js';
import { planAgentOnNode, outputTimeResolutionMs, RESUMABLE_STEPS, workersFor, type LocalFacts, type ResumableStep } from './decide.js';
import { relistWants, type Glimpse } from './relist.js';
import { DEFAULT_STALL_THRESHOLD_MS, progressProblem, RelistProgress } from './progress.js';
import { ChildCalls } from './childCalls.js';
import { ExitWatches } from './exitWatch.js';
import { Heartbeat, registerNode } from './registration.js';
import { addFinding, latestReport, replayReports, type FindingsSummary, type LatestReport } from './reports.js';
import { ResolveError, SpecResolver } from './resolve.js';
import { cleanupAgent } from './runtime/cleanup.js';
import { expandEnv } from './runtime/expand.js';
import { launch } from './runtime/launch.js';
import { listSessions, observeSession } from './runtime/observe.js';
import { checkLayout, checkTraversable, probeSandbox, type NodeSandbox } from './runtime/sandbox.js';
import { sweepNode } from './runtime/sweep.js';
import { hasTombstone, isAgentUid, listWorkspaces, sha256Hex, tombstoneTrigger, workspacePaths, type WorkspaceEntry } from './runtime/workspace.js';
import { findArchiveLocation } from './runtime/archive.js';
import { exists } from './runtime/files.js';
import { stallPoint } from './runtime/stallPoint.js';
import { DEFAULT_OUTPUT_MAX_BYTES, outputCapFor, statOutput } from './runtime/capture.js';
import { enforceRetention, RETENTION_REASONS, type RetentionPolicy } from './runtime/retention.js';
import { listPanes, sessionNameFor, type PaneInfo } from './runtime/tmux.js';
import { readSandboxUid } from './runtime/uids.js';
import { registerSpawnMetric } from './runtime/spawn.js';

type AgentObj = Agent & KubeObject;

/** spec.resources.limits as the runtime takes them (the API validated their syntax). */
export function limitsOf(l: NonNullable<Agent['spec']['resources']>['limits']): Limits {
  return {
    ...(l?.memory !== undefined ? { memoryBytes: bytesOf(l.memory, 'spec.resources.limits.memory') } : {}),
    ...(l?.cpu !== undefined ? { cpuMillis: milliCpuOf(l.cpu, 'spec.resources.limits.cpu') } : {}),
    ...(l?.pids !== undefined ? { pids: l.pids } : {}),
  };
}

export interface SidecarOptions {
  kubeConfig: KubeConfig;
  logger: Logger;
  metrics: ReconcileMetrics;
  nodeName: string;
  root: string;
  archiveDir: string;
  capacity: number;
  labels: Record<string, string>;
  /** Report endpoint port on loopback; undefined: the one this node used before, else a free one. */
  reportPort?: number;
  /** Per-agent caps on reports and bytes per minute (default DEFAULT_REPORT_CAPS). */
  reportCaps?: ReportCaps;
  /** Every agent's sandbox (see runtime/sandbox.ts); checked for real before anything starts. */
  sandbox: NodeSandbox;
  /** The sidecar's kubeconfig file, if any: refused where an agent could see it. */
  kubeconfigPath?: string;
  /** Absolute path of the command line entry (dist/src/cli.js), for the `agent-operator` shim on the session PATH. */
  cliPath: string;
  version: string;
  /** Concurrent reconciles; default workersFor(capacity). */
  workers?: number;
  pollIntervalMs?: number;
  heartbeatIntervalMs?: number;
  sweepIntervalMs?: number;
  sweepMinAgeSeconds?: number;
  /** /healthz fails when no relist completed for this long while work is pending (progress.ts). */
  stallThresholdMs?: number;
  /** The output cap of an Agent that sets none, and the most one may set (capture.ts). */
  output?: { defaultBytes: number; limitBytes: number };
  /** The most each report journal of one agent holds (report/journal.ts). */
  journalMaxBytes?: number;
  /** How long and how much of the archive the node keeps (retention.ts); applied at start and at every sweep. */
  archiveRetention?: RetentionPolicy;
}

interface Ctx extends AgentContext {
  key: string;
}

const CONTROLLER_NAME = 'agent-node';
/** reportingController of the node's Events. */
export const REPORTING_CONTROLLER = 'orchestrator.dev/sidecar';
/** Every this many relist ticks, every running agent is reconciled, changed or not. */
const RESYNC_TICKS = 30;
/** A launch unfinished for longer than this is logged at every resync until it ends. */
const SLOW_LAUNCH_MS = 30_000;

/** Registration retries: 0.5 s doubling to 30 s. */
const REGISTRATION_BACKOFF = { baseMs: 500, maxMs: 30_000 };

export class NodeSidecar {
  private readonly log: Logger;
  private readonly agents: Informer<AgentObj>;
  private readonly queue: WorkQueue<string>;
  private readonly agentApi: ResourceClient<AgentObj>;
  private readonly resolver: SpecResolver;
  private readonly heartbeat: Heartbeat;
  private server: ReportServer | undefined;
  private readonly binDir: string;
  /** State kept between the node's files and the Agent's status, by UID. */
  private readonly reports = new Map<string, LatestReport>();
  private readonly findings = new Map<string, FindingsSummary>();
  private readonly tokens = new Map<string, string>();
  private readonly keys = new Map<string, string>();
  private readonly launchErrors = new Map<string, string>();
  private readonly limitsNotEnforced = new Map<string, LimitController[]>();
  private readonly cleaning = new Set<string>();
  private readonly cleaned = new Map<string, CleanupRecord>();
  private readonly cleanupSeconds: Histogram;
  private readonly cleanupFailures: Counter;
  private readonly sessions: Gauge;
  private readonly launchResumes: Counter<'step'>;
  private readonly reportsCapped: Counter<'cap'>;
  private readonly archiveDeletions: Counter<'reason'>;
  private readonly archiveDeletedBytes: Counter<'reason'>;
  private readonly archiveBytes: Gauge;
  /** Launches decided and not yet seen through (started, or given up for a cleanup), by UID. */
  private readonly unfinished = new Map<string, { since: number; step: ResumableStep | 'none' }>();
  private readonly exits: ExitWatches;
  private readonly childCalls: ChildCalls;
  private readonly events: EventRecorder;
  /** This node's AgentNode once registered: what the node's own Events are about. */
  private node: KubeObject | undefined;
  /** What the relist last saw of each running agent, and how many ticks there were. */
  private readonly glimpses = new Map<string, Glimpse>();
  private ticks = 0;
  private polling = false;
  private readonly progress = new RelistProgress();
  private retaining = false;

  constructor(private readonly o: SidecarOptions) {
    this.log = o.logger.child({ node: o.nodeName });
    this.binDir = join(o.root, 'bin');
    this.events = new EventRecorder(o.kubeConfig, { logger: this.log, reportingController: REPORTING_CONTROLLER, reportingInstance: o.nodeName });
    this.exits = new ExitWatches(
      o.root,
      (uid) => {
        const key = this.keys.get(uid);
        if (key) this.queue.add(key);
      },
      this.log,
    );
    this.agents = new Informer<AgentObj>(o.kubeConfig, {
      resource: AGENT_RESOURCE,
      logger: this.log,
      labelSelector: `${NODE_LABEL}=${o.nodeName}`,
      resyncPeriodMs: 5 * 60_000,
    });
    const m = o.metrics;
    this.queue = new WorkQueue<string>({ metrics: queueMetricsFor(m, CONTROLLER_NAME) });
    this.agentApi = agentClient(o.kubeConfig);
    this.resolver = new SpecResolver(o.kubeConfig);
    this.childCalls = new ChildCalls({ nodeName: o.nodeName, root: o.root, archiveDir: o.archiveDir, api: this.agentApi, cached: (key) => this.agents.get(key) });
    this.heartbeat = new Heartbeat({ api: agentNodeClient(o.kubeConfig), nodeName: o.nodeName, labels: o.labels, capacity: o.capacity, version: o.version, logger: this.log });
    this.cleanupSeconds = new Histogram({
      name: 'agent_operator_cleanup_duration_seconds',
      help: 'Time from the start of an agent cleanup to its record',
      buckets: [0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120],
      registers: [m.registry],
    });
    this.cleanupFailures = new Counter({ name: 'agent_operator_cleanup_failures_total', help: 'Cleanups that recorded errors or failed outright', registers: [m.registry] });
    this.sessions = new Gauge({ name: 'agent_operator_sessions', help: 'Agent sessions alive on the node', labelNames: ['node'], registers: [m.registry] });
    this.launchResumes = new Counter({
      name: 'agent_operator_launch_resumes_total',
      help: 'Launches found cut short (a crash) and taken up again, by the last step they got through',
      labelNames: ['step'],
      registers: [m.registry],
    });
    for (const step of RESUMABLE_STEPS) this.launchResumes.inc({ step }, 0);
    this.reportsCapped = new Counter({
      name: 'agent_operator_reports_capped_total',
      help: 'Reports refused (429) because their agent went over its reports-per-minute (rate) or bytes-per-minute (bytes) cap',
      labelNames: ['cap'],
      registers: [m.registry],
    });
    for (const cap of ['rate', 'bytes']) this.reportsCapped.inc({ cap }, 0);
    registerFileOperationMetrics(m.registry);
    const progress = this.progress;
    new Gauge({
      name: 'agent_operator_relist_last_completed_timestamp_seconds',
      help: 'When the relist of the agents on the node last completed a pass (0: not yet); /healthz fails when it falls too far behind',
      registers: [m.registry],
      collect() {
        this.set(progress.lastPassSeconds());
      },
    });
    this.archiveDeletions = new Counter({
      name: 'agent_operator_archive_deletions_total',
      help: 'Archives deleted by retention, by reason: age (older than --archive-max-age-seconds) or size (oldest first, over --archive-max-size)',
      labelNames: ['reason'],
      registers: [m.registry],
    });
    this.archiveDeletedBytes = new Counter({
      name: 'agent_operator_archive_deleted_bytes_total',
      help: 'Bytes of the archives deleted by retention, by reason',
      labelNames: ['reason'],
      registers: [m.registry],
    });
    for (const reason of RETENTION_REASONS) {
      this.archiveDeletions.inc({ reason }, 0);
      this.archiveDeletedBytes.inc({ reason }, 0);
    }
    this.archiveBytes = new Gauge({ name: 'agent_operator_archive_bytes', help: "Bytes the node's archives held after the last retention pass", registers: [m.registry] });
    registerSpawnMetric(m.registry);
    const unfinished = this.unfinished;
    new Gauge({
      name: 'agent_operator_launches_unfinished',
      help: 'Launches of Agents bound to this node that were begun and have not started their command nor ended',
      registers: [m.registry],
      collect() {
        this.set(unfinished.size);
      },
    });
    const enqueue = (a: AgentObj) => {
      const uid = a.metadata?.uid;
      if (uid) this.keys.set(uid, objectKey(a));
      this.queue.add(objectKey(a));
    };
    this.agents
      .onAdd(enqueue)
      .onUpdate((_, a) => enqueue(a))
      .onDelete((a) => {
        const uid = a.metadata?.uid ?? '';
        this.exits.unwatch(uid);
        void this.server?.closeChannel(uid);
        for (const m of [this.reports, this.findings, this.keys, this.launchErrors, this.limitsNotEnforced, this.cleaned, this.unfinished]) m.delete(uid);
      });
  }

  hasSynced(): boolean {
    return this.agents.hasSynced();
  }

  heartbeatHealthy(): boolean {
    return this.heartbeat.healthy((this.o.heartbeatIntervalMs ?? 10_000) * 3);
  }

  /** For /healthz: undefined while the relist makes progress, else why not (progress.ts). */
  progressProblem(): string | undefined {
    const pending = this.agents.list().filter((a) => this.holds(a)).length + this.queue.len();
    return progressProblem(this.progress.observe(Date.now(), this.o.stallThresholdMs ?? DEFAULT_STALL_THRESHOLD_MS, pending, this.queue.oldestQueuedMs()));
  }

  /** An Agent bound here whose cleanup is not recorded: what the relist looks after. */
  private holds(a: AgentObj): boolean {
    return a.status?.nodeName === this.o.nodeName && !a.status?.cleanup?.completionTime;
  }

  /** The report endpoint's base URL, once listening. */
  reportUrl(): string | undefined {
    return this.server?.url;
  }

  async run(signal: AbortSignal): Promise<void> {
    await mkdir(this.o.root, { recursive: true, mode: 0o700 });
    await mkdir(this.o.archiveDir, { recursive: true, mode: 0o700 });
    await this.checkSandbox();
    await this.writeShim();
    await this.retain();
    const rediscovered = await this.rediscover();
    this.server = await this.startServer();
    await this.reopenChannels(rediscovered);
    this.node = await this.retry('registering the AgentNode', signal, () =>
      registerNode({ api: agentNodeClient(this.o.kubeConfig), nodeName: this.o.nodeName, labels: this.o.labels, capacity: this.o.capacity, version: this.o.version, logger: this.log }),
    );
    if (rediscovered.length > 0) {
      this.nodeEvent('Normal', 'SessionsRediscovered', `found ${rediscovered.length} agent workspace(s) from before this sidecar started; carrying on with them`);
    }
    const beat = async () => {
      const running = (await listSessions(this.o.root).catch(() => [])).filter((s) => !s.dead).length;
      this.sessions.set({ node: this.o.nodeName }, running);
      await this.heartbeat.beat(running);
    };
    await beat();
    this.progress.started(Date.now());
    const timers = [
      setInterval(() => void beat(), this.o.heartbeatIntervalMs ?? 10_000),
      setInterval(() => void this.poll().catch((err: unknown) => this.log.error({ err: describeError(err) }, 'relist failed')), this.o.pollIntervalMs ?? 1000),
      setInterval(() => void this.sweep().then(() => this.retain()), this.o.sweepIntervalMs ?? 60_000),
    ];
    const server = this.server;
    try {
      // On stop, cleanups in hand finish; sessions are never killed because the sidecar stops.
      await runController(
        {
          informers: [this.agents],
          queue: this.queue,
          workers: this.o.workers ?? workersFor(this.o.capacity),
          reconcile: (key) => this.syncAgent(key),
          logger: this.log,
          onReconcile: reconcileObserver(this.o.metrics, CONTROLLER_NAME),
          onSynced: () => {
            this.log.info({ agents: this.agents.keys().length, report: server.url }, 'synced; managing agents');
            void this.sweep();
          },
        },
        signal,
      );
    } finally {
      timers.forEach(clearInterval);
      this.exits.closeAll();
      await server.close();
      await this.events.flush();
    }
  }

  /** A node that cannot sandbox its agents does not start (never a silent downgrade). */
  private async checkSandbox(): Promise<void> {
    const { host, uids } = this.o.sandbox;
    if (host.mode === 'none') {
      this.log.warn("SANDBOX DISABLED (--sandbox=none): every agent runs as this sidecar's user, sees the whole node and every other agent; use only on a trusted single-tenant node");
      return;
    }
    checkLayout(host, { 'node root': this.o.root, 'archive directory': this.o.archiveDir, kubeconfig: this.o.kubeconfigPath });
    await checkTraversable(this.o.root, 'their workspaces');
    for (const p of host.readOnly) await checkTraversable(p, 'agent-operator and Node.js');
    await probeSandbox(host, uids.first);
    this.log.info({ sandbox: host.mode, uids: `${uids.first}-${uids.first + uids.count - 1}` }, 'agents run sandboxed');
  }

  /** Puts `agent-operator` on the session PATH, whatever way this process was started. */
  private async writeShim(): Promise<void> {
    await mkdir(this.binDir, { recursive: true });
    const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
    const path = join(this.binDir, 'agent-operator');
    await writeFile(path, `#!/bin/sh\nexec ${q(process.execPath)} ${q(this.o.cliPath)} "$@"\n`);
    await chmod(path, 0o755);
  }

  /** An Event about this node's AgentNode (`kubectl describe agentnode`): what only the node knows. */
  private nodeEvent(type: 'Normal' | 'Warning', reason: string, note: string): void {
    if (this.node) this.events.event(this.node, type, reason, note);
  }

  /** Rebuilds tokens and report state from the workspaces of agents started before this process; how many. */
  private async rediscover(): Promise<WorkspaceEntry[]> {
    const workspaces = await listWorkspaces(this.o.root);
    for (const w of workspaces) {
      if (w.record?.reportTokenSha256) this.tokens.set(w.record.reportTokenSha256, w.uid);
      await this.replay(w.uid, workspacePaths(this.o.root, w.uid));
    }
    if (workspaces.length > 0) this.log.info({ workspaces: workspaces.length }, 'rediscovered agents on this node');
    return workspaces;
  }

  /**
   * Listens again on the report socket of every agent found on the node that is not being cleaned
   * up (of those rediscover found): its sandbox sees the directory, so the new socket is where its old one was.
   */
  private async reopenChannels(workspaces: readonly WorkspaceEntry[]): Promise<void> {
    if (this.o.sandbox.host.mode === 'none') return;
    for (const w of workspaces) {
      const paths = workspacePaths(this.o.root, w.uid);
      const gid = await readSandboxUid(paths);
      // Agents launched before report sockets existed have no channel directory: they keep their token.
      if (gid === undefined || (await hasTombstone(paths)) || !(await exists(paths.channel))) continue;
      try {
        await this.server!.openChannel(w.uid, paths.channel, gid);
        this.log.info({ namespace: w.record?.namespace, name: w.record?.name, uid: w.uid }, 'report channel open again');
      } catch (err) {
        // Its launch (resumed) opens it again or fails visibly on the Agent; a workspace without a channel is no reason to stop the node.
        this.log.warn({ namespace: w.record?.namespace, name: w.record?.name, uid: w.uid, err: describeError(err) }, 'could not reopen a report channel');
      }
    }
  }

  private async replay(uid: string, files: { reports: string; findings: string }): Promise<void> {
    const r = await replayReports(files);
    if (r.report) this.reports.set(uid, r.report);
    if (r.findings) this.findings.set(uid, r.findings);
  }

  private async startServer(): Promise<ReportServer> {
    const statePath = join(this.o.root, 'sidecar.json');
    let port = this.o.reportPort;
    if (port === undefined) {
      // Running sessions carry AGENT_REPORT_URL: the port must survive restarts.
      const saved = await readFile(statePath, 'utf8').then(
        (t) => JSON.parse(t) as { reportPort?: number },
        (): { reportPort?: number } => ({}),
      );
      port = saved.reportPort ?? 0;
    }
    const server = await startReportServer<Ctx>({
      host: '127.0.0.1',
      port,
      logger: this.log,
      authenticate: (token) => this.contextOf(this.tokens.get(sha256Hex(token))),
      agentContext: (uid) => this.contextOf(uid),
      ...(this.o.reportCaps ? { caps: this.o.reportCaps } : {}),
      onCapped: (cap) => this.reportsCapped.inc({ cap }),
      ...(this.o.journalMaxBytes !== undefined ? { journalMaxBytes: this.o.journalMaxBytes } : {}),
      onStatus: async (ctx, report, at) => {
        this.reports.set(ctx.uid, latestReport(report, at, this.reports.get(ctx.uid)));
        this.queue.add(ctx.key);
      },
      onFinding: async (ctx, finding, at) => {
        this.findings.set(ctx.uid, addFinding(this.findings.get(ctx.uid), finding, at));
        this.queue.add(ctx.key);
      },
      onCall: (ctx, kind, input) => this.childCalls.answer(ctx.key, kind, input),
    });
    await writeFile(statePath, `${JSON.stringify({ reportPort: server.port })}\n`);
    return server;
  }

  private contextOf(uid: string | undefined): Ctx | undefined {
    const key = uid ? this.keys.get(uid) : undefined;
    if (!uid || !key) return undefined;
    return { uid, key, workspaceDir: workspacePaths(this.o.root, uid).dir, acceptingReports: !this.cleaning.has(uid) && !this.cleaned.has(uid) };
  }

  /**
   * Relists the running agents (relist.ts): those whose session or output changed are reconciled;
   * every RESYNC_TICKS-th tick, all of them.
   */
  private async poll(): Promise<void> {
    if (this.polling) return; // a slow tick is not overlapped by the next
    this.polling = true;
    try {
      await this.relist(this.ticks++ % RESYNC_TICKS === 0);
      this.progress.passed(Date.now());
    } catch (err) {
      this.progress.failed(describeError(err));
      throw err;
    } finally {
      this.polling = false;
    }
  }

  private async relist(resync: boolean): Promise<void> {
    if (resync) this.logSlowLaunches();
    await stallPoint('relist');
    const active = this.agents.list().filter((a) => this.holds(a));
    let panes: Map<string, PaneInfo> | undefined;
    try {
      panes = new Map((await listPanes(this.o.root)).map((p) => [p.sessionName, p]));
    } catch (err) {
      this.log.warn({ err: describeError(err) }, 'listing the sessions failed; looking at every agent');
    }
    const seen = new Set<string>();
    for (const a of active) {
      const uid = a.metadata?.uid;
      if (!uid || !isAgentUid(uid)) continue;
      seen.add(uid);
      const pane = panes?.get(sessionNameFor(uid));
      const now: Glimpse = {
        pane: pane ? (pane.dead ? 'dead' : 'alive') : 'none',
        outputMtimeMs: await statOutput(workspacePaths(this.o.root, uid).dir).then(
          (st) => st?.mtimeMs ?? 0,
          (err: unknown) => {
            if (err instanceof FileOperationTimeoutError) throw err; // a pass that did not see everything
            return 0;
          },
        ),
      };
      if (panes === undefined || relistWants(this.glimpses.get(uid), now, outputTimeResolutionMs(a.spec.idleTimeoutSeconds), resync)) {
        this.glimpses.set(uid, now);
        this.queue.add(objectKey(a));
      }
    }
    for (const uid of this.glimpses.keys()) if (!seen.has(uid)) this.glimpses.delete(uid);
  }

  private async syncAgent(key: string): Promise<void> {
    const agent = this.agents.get(key);
    const uid = agent?.metadata?.uid;
    // The binding is the label (the controller's record, what we watch) and status.nodeName (its copy); act when both name this node.
    if (!agent || !uid || agent.status?.nodeName !== this.o.nodeName) return;
    if (!isAgentUid(uid)) {
      this.log.error({ key, uid }, 'Agent UID is not a UUID; not touching it');
      return;
    }
    if (this.cleaning.has(uid)) return;
    const log = this.log.child({ namespace: agent.metadata?.namespace, name: agent.metadata?.name, uid });
    const local = await this.localFacts(uid);
    const decision = planAgentOnNode(agent, local, Date.now());
    if (decision.statusPatch) {
      await this.agentApi.patchStatus(refOf(agent), decision.statusPatch);
      log.debug({ patch: Object.keys(decision.statusPatch) }, 'status written');
    }
    if (decision.action.kind !== 'launch') this.unfinished.delete(uid);
    switch (decision.action.kind) {
      case 'launch': {
        const step = decision.action.resume;
        this.unfinished.set(uid, { since: this.unfinished.get(uid)?.since ?? Date.now(), step: step ?? 'none' });
        if (step) {
          this.launchResumes.inc({ step });
          log.warn({ step }, `resuming a launch cut short after its ${step} step`);
        }
        await this.launch(agent, uid, log);
        break;
      }
      case 'cleanup':
        await this.cleanup(agent, uid, decision.action.trigger, log);
        break;
      case 'none':
        // Running (also after a restart of this process): its exit is noticed as it happens.
        if (local.sessionAlive && !local.cleanup) this.exits.watch(uid);
        break;
    }
  }

  private async localFacts(uid: string): Promise<LocalFacts> {
    const obs = await observeSession(this.o.root, uid);
    const cleanupBegun = await tombstoneTrigger(workspacePaths(this.o.root, uid));
    const launchError = this.launchErrors.get(uid) ?? obs.launchError;
    const sessionLost = obs.lost && !launchError ? 'the session disappeared while its command ran (tmux server killed or node restarted)' : undefined;
    return {
      launch: obs.launch,
      ...(cleanupBegun ? { cleanupBegun } : {}),
      ...(obs.record ? { sessionName: obs.sessionName } : {}),
      ...(obs.startTime ? { startTime: obs.startTime } : {}),
      sessionAlive: obs.sessionAlive,
      ...(obs.exited && obs.exitCode !== undefined && !launchError ? { exitCode: obs.exitCode } : {}),
      ...(launchError ? { launchError } : {}),
      ...(this.limitsNotEnforced.has(uid) ? { limitsNotEnforced: this.limitsNotEnforced.get(uid)! } : {}),
      ...(obs.record?.output ? { outputMaxBytes: obs.record.output.maxBytes } : {}),
      ...(sessionLost ? { sessionLost } : {}),
      ...(obs.lastOutputAt ? { lastOutputAt: Date.parse(obs.lastOutputAt) } : {}),
      ...(this.reports.has(uid) ? { report: this.reports.get(uid)! } : {}),
      ...(this.findings.has(uid) ? { findings: this.findings.get(uid)! } : {}),
      ...(this.cleaned.has(uid) ? { cleanup: this.cleaned.get(uid)! } : {}),
    };
  }

  private async launch(agent: AgentObj, uid: string, log: Logger): Promise<void> {
    const ref = refOf(agent);
    let resolved;
    try {
      resolved = await this.resolver.resolve(ref.namespace ?? '', agent.spec);
    } catch (err) {
      if (!(err instanceof ResolveError)) throw err; // transient: retried with backoff
      log.warn({ err: err.message }, 'cannot launch');
      this.launchErrors.set(uid, err.message);
      this.queue.add(objectKey(agent));
      return;
    }
    // Sandboxed: its own socket, and no token (nothing to steal). Unsandboxed: the loopback URL and a token.
    const sandboxed = this.o.sandbox.host.mode !== 'none';
    const token = sandboxed ? undefined : randomBytes(32).toString('base64url');
    if (token) this.tokens.set(sha256Hex(token), uid);
    const channelEnv: Record<string, string> = token
      ? { [AGENT_ENV.reportUrl]: this.server!.url, [AGENT_ENV.reportToken]: token }
      : { [AGENT_ENV.reportSocket]: `${SANDBOX_REPORT_DIR}/${REPORT_SOCKET_NAME}` };
    const env = expandEnv(resolved.env, {
      [AGENT_ENV.name]: ref.name,
      [AGENT_ENV.namespace]: ref.namespace ?? '',
      [AGENT_ENV.uid]: uid,
      [AGENT_ENV.promptFile]: workspacePaths(this.o.root, uid).prompt,
    });
    try {
      const result = await launch({
        root: this.o.root,
        uid,
        namespace: ref.namespace ?? '',
        name: ref.name,
        command: agent.spec.command,
        env: { ...channelEnv, ...env },
        ...(sandboxed
          ? {
              openChannel: async (dir: string, gid: number) => {
                await this.server!.openChannel(uid, dir, gid);
                log.info('report channel open');
              },
            }
          : {}),
        ...(agent.spec.workingDir ? { workingDir: agent.spec.workingDir } : {}),
        prompt: resolved.prompt,
        promptOnStdin: agent.spec.promptOnStdin ?? false,
        binDir: this.binDir,
        sandbox: this.o.sandbox,
        limits: limitsOf(agent.spec.resources?.limits),
        outputMaxBytes: this.outputCap(agent, log),
        logger: this.runtimeLogger(agent),
      });
      if (result.tombstoned) await this.recoverFromArchive(uid);
      if (result.limitsNotEnforced) {
        // Into the Agent's status; the controller records the Warning Event (a node's Events are about its AgentNode only).
        log.warn({ limitsNotEnforced: result.limitsNotEnforced }, 'limits not enforced on this node');
        this.limitsNotEnforced.set(uid, result.limitsNotEnforced);
      }
      if (result.started) {
        this.unfinished.delete(uid);
        this.exits.watch(uid);
        log.info({ session: result.sessionName }, 'agent launched');
      }
    } catch (err) {
      if (err instanceof FileOperationTimeoutError) throw err; // the node's problem: retried with backoff
      // A launch refused for its inputs is the spec's problem, not a transient one.
      log.error({ err: describeError(err) }, 'launch failed');
      this.launchErrors.set(uid, `launch failed: ${describeError(err)}`);
    }
    this.queue.add(objectKey(agent));
  }

  /**
   * The agent's output cap; one asked above the node's limit gets the limit. The cap goes into the
   * Agent's status (outputMaxBytes) and the controller records the Warning (a node's Events are about its AgentNode only).
   */
  private outputCap(agent: AgentObj, log: Logger): number {
    const asked = agent.spec.output?.maxSize;
    const node = this.o.output ?? { defaultBytes: DEFAULT_OUTPUT_MAX_BYTES, limitBytes: DEFAULT_OUTPUT_MAX_BYTES };
    const cap = outputCapFor(asked !== undefined ? bytesOf(asked, 'spec.output.maxSize') : undefined, node);
    if (cap.clamped) log.warn({ asked, maxBytes: cap.maxBytes }, "spec.output.maxSize above this node's limit: lowered");
    return cap.maxBytes;
  }

  /** Never silent: every launch begun and not finished for a while is logged, with where it stands. */
  private logSlowLaunches(): void {
    const now = Date.now();
    for (const [uid, u] of this.unfinished) {
      const ms = now - u.since;
      if (ms >= SLOW_LAUNCH_MS) this.log.warn({ uid, key: this.keys.get(uid), step: u.step, seconds: Math.round(ms / 1000) }, 'launch not finished');
    }
  }

  /** For the runtime, which binds `uid` itself (the sweeper calls it without an Agent): one key, once per line. */
  private runtimeLogger(agent: AgentObj): Logger {
    return this.log.child({ namespace: agent.metadata?.namespace, name: agent.metadata?.name });
  }

  /** After a crash between cleanup and its status write: what the archive holds is the truth. */
  private async recoverFromArchive(uid: string): Promise<void> {
    const loc = await findArchiveLocation(this.o.archiveDir, uid);
    if (!loc) return;
    await this.replay(uid, { reports: join(loc.dir, 'reports.jsonl'), findings: join(loc.dir, 'findings.jsonl') });
  }

  private async cleanup(agent: AgentObj, uid: string, trigger: string, log: Logger): Promise<void> {
    this.cleaning.add(uid);
    this.exits.unwatch(uid);
    const started = performance.now();
    try {
      const record = await cleanupAgent({
        root: this.o.root,
        ...(this.o.sandbox.cgroups ? { cgroups: this.o.sandbox.cgroups } : {}),
        archiveDir: this.o.archiveDir,
        uid,
        namespace: agent.metadata?.namespace ?? '',
        name: agent.metadata?.name ?? '',
        gracePeriodSeconds: agent.spec.cleanup?.gracePeriodSeconds ?? DEFAULTS.gracePeriodSeconds,
        keepLogs: agent.spec.cleanup?.keepLogs ?? DEFAULTS.keepLogs,
        trigger,
        logger: this.runtimeLogger(agent),
        beforeArchive: () => this.server!.whenIdle(uid),
      });
      this.cleaned.set(uid, record);
      await this.server!.closeChannel(uid);
      this.cleanupSeconds.observe((performance.now() - started) / 1000);
      if (record.errors && record.errors.length > 0) {
        this.cleanupFailures.inc();
        log.warn({ trigger, errors: record.errors }, 'cleanup finished with errors');
      } else log.info({ trigger, ms: record.durationMilliseconds, archive: record.archivePath }, 'cleaned up');
    } catch (err) {
      this.cleanupFailures.inc();
      throw err; // retried with backoff; every step is idempotent
    } finally {
      this.cleaning.delete(uid);
    }
    // Write the record now rather than at the next poll.
    this.queue.add(objectKey({ ...agent, apiVersion: API_VERSION, kind: AGENT_KIND }));
  }

  /** Cleans what no live Agent bound here accounts for: the safety net under everything else. */
  private async sweep(): Promise<void> {
    if (!this.agents.hasSynced()) return;
    try {
      const expected = this.agents.list().map((a) => a.metadata?.uid ?? '');
      const results = await sweepNode({
        root: this.o.root,
        ...(this.o.sandbox.cgroups ? { cgroups: this.o.sandbox.cgroups } : {}),
        archiveDir: this.o.archiveDir,
        expectedUids: [...expected, ...this.cleaning],
        logger: this.log,
        ...(this.o.sweepMinAgeSeconds !== undefined ? { minAgeSeconds: this.o.sweepMinAgeSeconds } : {}),
      });
      for (const r of results) {
        await this.server?.closeChannel(r.uid);
        this.log.warn({ uid: r.uid, error: r.error, archive: r.record?.archivePath }, 'swept an orphan');
        this.nodeEvent(
          'Warning',
          r.error ? 'OrphanCleanupFailed' : 'OrphanCleanedUp',
          r.error
            ? `could not clean up agent ${r.uid}, which no Agent bound to this node accounts for: ${r.error}`
            : `cleaned up agent ${r.uid}, which no Agent bound to this node accounts for: ${r.record?.processesKilled ?? 0} process(es) stopped${r.record?.archivePath ? `, logs archived to ${r.record.archivePath}` : ''}`,
        );
      }
    } catch (err) {
      this.log.error({ err: describeError(err) }, 'sweep failed');
    }
  }

  /** Archive retention: oldest first past the max age or the max bytes, each deletion logged and counted. */
  private async retain(): Promise<void> {
    const policy = this.o.archiveRetention;
    if (!policy || (policy.maxAgeMs === undefined && policy.maxBytes === undefined)) return;
    if (this.retaining) return; // a slow pass is not overlapped by the next (it would count deletions twice)
    this.retaining = true;
    try {
      const r = await enforceRetention({
        root: this.o.root,
        archiveDir: this.o.archiveDir,
        policy,
        logger: this.log,
        onDelete: (d) => {
          this.archiveDeletions.inc({ reason: d.reason });
          this.archiveDeletedBytes.inc({ reason: d.reason }, d.entry.bytes);
        },
      });
      this.archiveBytes.set(r.remainingBytes);
    } catch (err) {
      this.log.error({ err: describeError(err) }, 'archive retention failed');
    } finally {
      this.retaining = false;
    }
  }

  private async retry<T>(what: string, signal: AbortSignal, fn: () => Promise<T>): Promise<T | undefined> {
    for (let attempt = 0; !signal.aborted; attempt++) {
      try {
        return await fn();
      } catch (err) {
        const delay = backoffDelay(attempt, REGISTRATION_BACKOFF);
        this.log.warn({ err: describeError(err), retryInMs: delay }, `${what} failed`);
        await sleep(delay, signal);
      }
    }
    return undefined;
  }
}
