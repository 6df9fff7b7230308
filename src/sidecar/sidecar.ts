/**
 * The node sidecar: registers and heartbeats its AgentNode, watches the Agents bound to its node,
 * launches them in tmux, relays their reports into status, and cleans each one up from outside the
 * moment it ends. Sessions outlive the sidecar: after a restart it rediscovers them from the node.
 */
import { join } from 'node:path';
import type { KubeConfig } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { AGENT_RESOURCE, agentClient, agentNodeClient, type KubeObject } from '../kube/resources.js';
import type { Agent } from '../api/agent.js';
import { NODE_LABEL } from '../api/constants.js';
import { backoffDelay, sleep } from '../kube/backoff.js';
import { describeError } from '../kube/errors.js';
import { runController } from '../kube/controllerLoop.js';
import { EventRecorder } from '../kube/events.js';
import { Informer, objectKey } from '../kube/informer.js';
import { WorkQueue } from '../kube/workqueue.js';
import { queueMetricsFor, reconcileObserver, type ReconcileMetrics } from '../observability/metrics.js';
import type { ReportCaps } from '../report/limits.js';
import { AgentRecords } from './agentRecord.js';
import { AgentWorker } from './agentWorker.js';
import { ChildCalls } from './childCalls.js';
import { nodeMayAct, workersFor } from './decide.js';
import { ExitWatches } from './exitWatch.js';
import { Housekeeping } from './housekeeping.js';
import { sidecarMetrics, type SidecarMetrics } from './metrics.js';
import { DEFAULT_STALL_THRESHOLD_MS, progressProblem, RelistProgress } from './progress.js';
import { Heartbeat, registerNode } from './registration.js';
import { Relister } from './relist.js';
import { ReportIntake } from './reportIntake.js';
import { SpecResolver } from './resolve.js';
import { chmod, mkdir, writeFile } from './runtime/boundedFs.js';
import { listSessions } from './runtime/observe.js';
import type { RetentionPolicy } from './runtime/retention.js';
import { checkLayout, checkTraversable, probeSandbox, type NodeSandbox } from './runtime/sandbox.js';

type AgentObj = Agent & KubeObject;

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

const CONTROLLER_NAME = 'agent-node';
/** reportingController of the node's Events. */
export const REPORTING_CONTROLLER = 'orchestrator.dev/sidecar';

/** Registration retries: 0.5 s doubling to 30 s. */
const REGISTRATION_BACKOFF = { baseMs: 500, maxMs: 30_000 };

/**
 * The composition root: the informer and work queue of the Agents bound here, one record per agent
 * (agentRecord.ts), the per-agent sync (agentWorker.ts), report intake (reportIntake.ts), the relist
 * (relist.ts), housekeeping (housekeeping.ts), registration and heartbeat (registration.ts).
 */
export class NodeSidecar {
  private readonly log: Logger;
  private readonly agents: Informer<AgentObj>;
  private readonly queue: WorkQueue<string>;
  private readonly records = new AgentRecords();
  private readonly heartbeat: Heartbeat;
  private readonly intake: ReportIntake;
  private readonly worker: AgentWorker;
  private readonly relister: Relister;
  private readonly housekeeping: Housekeeping;
  private readonly metrics: SidecarMetrics;
  private readonly binDir: string;
  private readonly exits: ExitWatches;
  private readonly events: EventRecorder;
  /** This node's AgentNode once registered: what the node's own Events are about. */
  private node: KubeObject | undefined;
  private readonly progress = new RelistProgress();

  constructor(private readonly o: SidecarOptions) {
    const log = (this.log = o.logger.child({ node: o.nodeName }));
    this.binDir = join(o.root, 'bin');
    const records = this.records;
    const enqueue = (key: string) => this.queue.add(key);
    this.events = new EventRecorder(o.kubeConfig, { logger: log, reportingController: REPORTING_CONTROLLER, reportingInstance: o.nodeName });
    this.exits = new ExitWatches(
      o.root,
      (uid) => {
        const key = records.get(uid)?.key;
        if (key) enqueue(key);
      },
      log,
    );
    this.agents = new Informer<AgentObj>(o.kubeConfig, {
      resource: AGENT_RESOURCE,
      logger: log,
      labelSelector: `${NODE_LABEL}=${o.nodeName}`,
      resyncPeriodMs: 5 * 60_000,
    });
    this.queue = new WorkQueue<string>({ metrics: queueMetricsFor(o.metrics, CONTROLLER_NAME) });
    const agentApi = agentClient(o.kubeConfig);
    this.metrics = sidecarMetrics(o.metrics.registry, {
      relistLastPassSeconds: () => this.progress.lastPassSeconds(),
      unfinishedLaunches: () => records.unfinishedLaunches().length,
    });
    const childCalls = new ChildCalls({ nodeName: o.nodeName, root: o.root, archiveDir: o.archiveDir, api: agentApi, cached: (key) => this.agents.get(key) });
    this.intake = new ReportIntake({
      root: o.root,
      archiveDir: o.archiveDir,
      records,
      logger: log,
      sandboxed: o.sandbox.host.mode !== 'none',
      ...(o.reportPort !== undefined ? { port: o.reportPort } : {}),
      ...(o.reportCaps ? { caps: o.reportCaps } : {}),
      ...(o.journalMaxBytes !== undefined ? { journalMaxBytes: o.journalMaxBytes } : {}),
      enqueue,
      onCapped: (cap) => this.metrics.reportsCapped.inc({ cap }),
      onCall: (ctx, kind, input) => childCalls.answer(ctx.key, kind, input),
    });
    this.worker = new AgentWorker({
      nodeName: o.nodeName,
      root: o.root,
      archiveDir: o.archiveDir,
      binDir: this.binDir,
      sandbox: o.sandbox,
      ...(o.output ? { output: o.output } : {}),
      agents: this.agents,
      agentApi,
      resolver: new SpecResolver(o.kubeConfig),
      records,
      intake: this.intake,
      exits: this.exits,
      metrics: this.metrics,
      enqueue,
      logger: log,
    });
    this.relister = new Relister({
      root: o.root,
      records,
      active: () => this.active(),
      enqueue,
      progress: this.progress,
      logger: log,
      onResync: () => this.worker.logSlowLaunches(),
    });
    this.housekeeping = new Housekeeping({
      root: o.root,
      archiveDir: o.archiveDir,
      ...(o.sandbox.cgroups ? { cgroups: o.sandbox.cgroups } : {}),
      ...(o.sweepMinAgeSeconds !== undefined ? { sweepMinAgeSeconds: o.sweepMinAgeSeconds } : {}),
      ...(o.archiveRetention ? { archiveRetention: o.archiveRetention } : {}),
      records,
      intake: this.intake,
      metrics: this.metrics,
      nodeEvent: (type, reason, note) => this.nodeEvent(type, reason, note),
      logger: log,
    });
    this.heartbeat = new Heartbeat({ api: agentNodeClient(o.kubeConfig), nodeName: o.nodeName, labels: o.labels, capacity: o.capacity, version: o.version, logger: log });
    const seen = (a: AgentObj) => {
      const key = objectKey(a);
      const uid = a.metadata?.uid;
      if (uid) records.ensure(uid).key = key;
      enqueue(key);
    };
    this.agents
      .onAdd(seen)
      .onUpdate((old, a) => {
        if (nodeMayAct(old, a)) seen(a);
      })
      .onDelete((a) => {
        const uid = a.metadata?.uid ?? '';
        this.exits.unwatch(uid);
        void this.intake.closeChannel(uid);
        records.forget(uid);
      });
  }

  hasSynced(): boolean {
    return this.agents.hasSynced();
  }

  heartbeatHealthy(): boolean {
    return this.heartbeat.healthy((this.o.heartbeatIntervalMs ?? 10_000) * 3);
  }

  /** For /healthz and the heartbeat: undefined while the relist makes progress, else why not (progress.ts). */
  progressProblem(): string | undefined {
    const pending = this.active().length + this.queue.len();
    return progressProblem(this.progress.observe(Date.now(), this.o.stallThresholdMs ?? DEFAULT_STALL_THRESHOLD_MS, pending, this.queue.oldestQueuedMs()));
  }

  /** The Agents bound here whose cleanup is not recorded: what the relist looks after. */
  private active(): AgentObj[] {
    return this.agents.list().filter((a) => a.status?.nodeName === this.o.nodeName && !a.status?.cleanup?.completionTime);
  }

  /** The report endpoint's base URL, once listening. */
  reportUrl(): string | undefined {
    return this.intake.url;
  }

  async run(signal: AbortSignal): Promise<void> {
    await mkdir(this.o.root, { recursive: true, mode: 0o700 });
    await mkdir(this.o.archiveDir, { recursive: true, mode: 0o700 });
    await this.checkSandbox();
    await this.writeShim();
    await this.housekeeping.retain();
    const rediscovered = await this.intake.rediscover();
    await this.intake.start();
    await this.intake.reopenChannels(rediscovered);
    this.node = await this.retry('registering the AgentNode', signal, () =>
      registerNode({ api: agentNodeClient(this.o.kubeConfig), nodeName: this.o.nodeName, labels: this.o.labels, capacity: this.o.capacity, version: this.o.version, logger: this.log }),
    );
    if (rediscovered.length > 0) {
      this.nodeEvent('Normal', 'SessionsRediscovered', `found ${rediscovered.length} agent workspace(s) from before this sidecar started; carrying on with them`);
    }
    const beat = async () => {
      const running = (await listSessions(this.o.root).catch(() => [])).filter((s) => !s.dead).length;
      this.metrics.sessions.set({ node: this.o.nodeName }, running);
      await this.heartbeat.beat(running, this.progressProblem());
    };
    await beat();
    this.progress.started(Date.now());
    const sweep = async () => {
      if (this.agents.hasSynced()) await this.housekeeping.sweep(this.agents.list().map((a) => a.metadata?.uid ?? ''));
    };
    const timers = [
      setInterval(() => void beat(), this.o.heartbeatIntervalMs ?? 10_000),
      setInterval(() => void this.relister.poll().catch((err: unknown) => this.log.error({ err: describeError(err) }, 'relist failed')), this.o.pollIntervalMs ?? 1000),
      setInterval(() => void sweep().then(() => this.housekeeping.retain()), this.o.sweepIntervalMs ?? 60_000),
    ];
    try {
      // On stop, cleanups in hand finish; sessions are never killed because the sidecar stops.
      await runController(
        {
          informers: [this.agents],
          queue: this.queue,
          workers: this.o.workers ?? workersFor(this.o.capacity),
          reconcile: (key) => this.worker.syncAgent(key),
          logger: this.log,
          onReconcile: reconcileObserver(this.o.metrics, CONTROLLER_NAME),
          onSynced: () => {
            this.log.info({ agents: this.agents.keys().length, report: this.intake.url }, 'synced; managing agents');
            void sweep();
          },
        },
        signal,
      );
    } finally {
      timers.forEach(clearInterval);
      this.exits.closeAll();
      await this.intake.close();
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
