/**
 * The Agent controller: informers on Agents and AgentNodes feed a keyed work queue; each reconcile
 * reads the cache, asks the pure planner (planAgent, reconcile.ts) for a plan, and executes it against
 * the API server. Writes are minimal merge patches and only happen when something changed.
 */
import type { KubeConfig } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { Agent } from '../api/agent.js';
import type { AgentNode } from '../api/agentNode.js';
import { setCondition } from '../api/conditions.js';
import { AGENT_KIND, AGENT_NODE_KIND, API_VERSION, FINALIZER, NODE_LABEL, NODE_SELECTOR_ANNOTATION } from '../api/constants.js';
import { isTerminalPhase, PHASES } from '../api/phase.js';
import { rfc3339 } from '../api/time.js';
import { isConflict, isNotFound } from '../kube/errors.js';
import { runController } from '../kube/controllerLoop.js';
import { EventRecorder } from '../kube/events.js';
import { Informer, objectKey } from '../kube/informer.js';
import { diffStatus } from '../kube/mergePatch.js';
import { AGENT_NODE_RESOURCE, AGENT_RESOURCE, NAMESPACE_RESOURCE, agentClient, agentNodeClient, refOf, type ResourceClient, type KubeObject } from '../kube/resources.js';
import { WorkQueue } from '../kube/workqueue.js';
import { queueMetricsFor, reconcileObserver, type ReconcileMetrics } from '../observability/metrics.js';
import { Gauge } from 'prom-client';
import { bindingOf } from './binding.js';
import { staleReadyCondition, viewNode, type NodeView } from './nodes.js';
import { controllerOf } from './children.js';
import { pickControllerStatus, planAgent, type Observed, type Plan, type ReconcileConfig } from './reconcile.js';
import { nodePoolOf } from './scheduler.js';

type AgentObj = Agent & KubeObject;
type NodeObj = AgentNode & KubeObject;
type NamespaceObj = KubeObject;

export interface ControllerOptions {
  kubeConfig: KubeConfig;
  logger: Logger;
  metrics: ReconcileMetrics;
  /** Name of this instance, for Events (reportingInstance). */
  identity: string;
  workers?: number;
  /** A node whose heartbeat is older than this is not ready (the node lifecycle controller's 40 s). */
  heartbeatGraceMs?: number;
  nodeLostGraceMs?: number;
  unschedulableRetryMs?: number;
  /** See ReconcileConfig.launchTimeoutMs; default 300 s. */
  launchTimeoutMs?: number;
  /** How often node heartbeats are checked for staleness. */
  nodeMonitorPeriodMs?: number;
  resyncPeriodMs?: number;
}

const CONTROLLER_NAME = 'agent';
export const REPORTING_CONTROLLER = 'orchestrator.dev/agent-controller';

export class AgentController {
  private readonly agents: Informer<AgentObj>;
  private readonly nodes: Informer<NodeObj>;
  /** For each namespace's node pool (NODE_SELECTOR_ANNOTATION). */
  private readonly namespaces: Informer<NamespaceObj>;
  private readonly queue: WorkQueue<string>;
  private readonly agentApi: ResourceClient<AgentObj>;
  private readonly nodeApi: ResourceClient<NodeObj>;
  private readonly events: EventRecorder;
  private readonly log: Logger;
  private readonly config: ReconcileConfig;
  private readonly heartbeatGraceMs: number;
  /** Bindings made but not yet seen in the cache (kube-scheduler's "assume"), by Agent UID. */
  private readonly assumed = new Map<string, string>();
  /**
   * By Agent key, the resourceVersions our own writes replaced, until the cache shows another: a
   * cache still at one of them has not caught up with our write, whose watch event is on its way
   * (a watch delivers every change in order) and will queue the Agent again.
   */
  private readonly ownWrites = new Map<string, Set<string>>();
  /** Nodes seen not ready at the last monitor pass, to act on transitions only. */
  private readonly notReady = new Set<string>();

  constructor(private readonly o: ControllerOptions) {
    this.log = o.logger.child({ controller: CONTROLLER_NAME });
    this.heartbeatGraceMs = o.heartbeatGraceMs ?? 40_000;
    this.config = { nodeLostGraceMs: o.nodeLostGraceMs ?? 300_000, unschedulableRetryMs: o.unschedulableRetryMs ?? 30_000, launchTimeoutMs: o.launchTimeoutMs ?? 300_000 };
    const resync = o.resyncPeriodMs ?? 10 * 60_000;
    this.agents = new Informer<AgentObj>(o.kubeConfig, { resource: AGENT_RESOURCE, logger: this.log, resyncPeriodMs: resync });
    this.nodes = new Informer<NodeObj>(o.kubeConfig, { resource: AGENT_NODE_RESOURCE, logger: this.log, resyncPeriodMs: resync });
    this.namespaces = new Informer<NamespaceObj>(o.kubeConfig, { resource: NAMESPACE_RESOURCE, logger: this.log, resyncPeriodMs: resync });
    const m = o.metrics;
    this.queue = new WorkQueue<string>({ metrics: queueMetricsFor(m, CONTROLLER_NAME) });
    this.agentApi = agentClient(o.kubeConfig);
    this.nodeApi = agentNodeClient(o.kubeConfig);
    this.events = new EventRecorder(o.kubeConfig, { logger: this.log, reportingController: REPORTING_CONTROLLER, reportingInstance: o.identity });
    this.registerPhaseGauge();
    this.wireHandlers();
  }

  /** True once both caches are filled (the readiness check). */
  hasSynced(): boolean {
    return this.agents.hasSynced() && this.nodes.hasSynced() && this.namespaces.hasSynced();
  }

  /** Runs until `signal` aborts, then drains the work in hand and stops. */
  async run(signal: AbortSignal): Promise<void> {
    const monitor = setInterval(() => this.monitorNodes(), this.o.nodeMonitorPeriodMs ?? 5000);
    try {
      await runController(
        {
          informers: [this.agents, this.nodes, this.namespaces],
          queue: this.queue,
          workers: this.o.workers ?? 4,
          reconcile: (key) => this.reconcileKey(key),
          logger: this.log,
          onReconcile: reconcileObserver(this.o.metrics, CONTROLLER_NAME),
          onSynced: () => this.log.info({ agents: this.agents.keys().length, nodes: this.nodes.keys().length }, 'caches synced; starting workers'),
        },
        signal,
      );
    } finally {
      clearInterval(monitor);
      await this.events.flush();
    }
  }

  private wireHandlers(): void {
    // A child's change is its parent's (the mirror); a parent's end is its children's (the cascade).
    const enqueue = (a: AgentObj) => {
      this.queue.add(objectKey(a));
      const owner = controllerOf(a);
      if (owner) this.queue.add(`${a.metadata?.namespace}/${owner.name}`);
      for (const c of this.childrenOf(a)) this.queue.add(objectKey(c));
    };
    this.agents
      .onAdd(enqueue)
      .onUpdate((old, cur) => {
        enqueue(cur);
        // A slot freed on a node: Pending Agents may fit now.
        if (!old.status?.cleanup?.completionTime && cur.status?.cleanup?.completionTime) this.enqueuePending();
      })
      .onDelete((a) => {
        if (a.metadata?.uid) this.assumed.delete(a.metadata.uid);
        this.ownWrites.delete(objectKey(a));
        enqueue(a);
        this.enqueuePending();
      });
    const nodeChanged = (n: NodeObj) => {
      this.enqueuePending();
      this.enqueueBoundTo(n.metadata?.name ?? '');
    };
    this.nodes
      .onAdd(nodeChanged)
      .onUpdate((old, cur) => {
        // Heartbeats change only the heartbeat time: not worth a pass over the Agents.
        if (schedulingView(old) !== schedulingView(cur)) nodeChanged(cur);
      })
      .onDelete(nodeChanged);
    // A namespace's pool changed: its Pending Agents may fit now, or no longer.
    this.namespaces
      .onAdd((ns) => this.enqueuePending(ns.metadata?.name))
      .onUpdate((old, cur) => {
        if (old.metadata?.annotations?.[NODE_SELECTOR_ANNOTATION] !== cur.metadata?.annotations?.[NODE_SELECTOR_ANNOTATION]) this.enqueuePending(cur.metadata?.name);
      });
  }

  /** Agents whose controlling owner is `parent` (by UID). */
  private childrenOf(parent: AgentObj): AgentObj[] {
    const uid = parent.metadata?.uid;
    const ns = parent.metadata?.namespace;
    return uid ? this.agents.list().filter((a) => a.metadata?.namespace === ns && controllerOf(a)?.uid === uid) : [];
  }

  /** What the child decisions need: the owner, the children and the names taken in the namespace. */
  private family(agent: AgentObj): Pick<Observed, 'parent' | 'children' | 'taken'> {
    const ns = agent.metadata?.namespace;
    const owner = controllerOf(agent);
    const parent = owner ? this.agents.get(`${ns}/${owner.name}`) : undefined;
    const children = this.childrenOf(agent);
    const mine = new Set(children.map((c) => c.metadata?.name));
    const taken = new Set(
      this.agents
        .list()
        .filter((a) => a.metadata?.namespace === ns && !mine.has(a.metadata?.name))
        .map((a) => a.metadata?.name ?? ''),
    );
    return { ...(parent ? { parent } : {}), children, taken };
  }

  /** Unbound active Agents (of one namespace, when given). */
  private enqueuePending(namespace?: string): void {
    for (const a of this.agents.list()) {
      if (namespace !== undefined && a.metadata?.namespace !== namespace) continue;
      if (!bindingOf(a).node && !isTerminalPhase(a.status?.phase)) this.queue.add(objectKey(a));
    }
  }

  private enqueueBoundTo(node: string): void {
    for (const a of this.agents.list()) if (bindingOf(a).node === node) this.queue.add(objectKey(a));
  }

  private nodeViews(now: number): Map<string, NodeView> {
    return new Map(this.nodes.list().map((n) => [n.metadata?.name ?? '', viewNode(n, now, this.heartbeatGraceMs)]));
  }

  /** Slots taken per node: bound Agents (or assumed bindings) whose cleanup is not recorded. */
  private usedSlots(): Map<string, number> {
    const used = new Map<string, number>();
    for (const a of this.agents.list()) {
      const uid = a.metadata?.uid ?? '';
      const bound = bindingOf(a).node;
      const node = bound ?? this.assumed.get(uid);
      if (bound) this.assumed.delete(uid);
      if (node && !a.status?.cleanup?.completionTime) used.set(node, (used.get(node) ?? 0) + 1);
    }
    return used;
  }

  private async reconcileKey(key: string): Promise<{ requeueAfterMs?: number } | void> {
    const cached = this.agents.get(key);
    if (!cached) return;
    // Deciding on a cache that has not seen our last write would only write its outcome again and be refused (409).
    if (this.ownWrites.get(key)?.has(cached.metadata?.resourceVersion ?? '')) return;
    this.ownWrites.delete(key);
    let agent: AgentObj = { ...cached, apiVersion: API_VERSION, kind: AGENT_KIND };
    const uid = agent.metadata?.uid ?? '';
    // An assumed binding not yet in the cache: decide as if it were, so we never bind twice.
    const assumedNode = this.assumed.get(uid);
    if (assumedNode && !bindingOf(agent).node) {
      agent = { ...agent, metadata: { ...agent.metadata, labels: { ...agent.metadata?.labels, [NODE_LABEL]: assumedNode } }, status: { ...agent.status, nodeName: assumedNode } };
    }
    const namespace = agent.metadata?.namespace ?? '';
    const pool = nodePoolOf(namespace, this.namespaces.get(namespace));
    const decide = async () => {
      const now = Date.now();
      const plan = planAgent({ agent, ...this.family(agent), nodes: this.nodeViews(now), used: this.usedSlots(), ...(pool ? { pool } : {}), now, config: this.config });
      return { plan, current: await this.bind(agent, plan) };
    };
    // One binding at a time, as kube-scheduler does: concurrent workers would otherwise count the
    // same free slot twice. Only the decision and the binding's write: once assumed, the binding
    // counts, and the rest of the plan is written outside.
    const { plan, current } = bindingOf(agent).node ? await decide() : await this.scheduling(decide);
    if (current) await this.execute(agent, current, plan);
    return plan.requeueAfterMs === undefined ? undefined : { requeueAfterMs: plan.requeueAfterMs };
  }

  private schedulingTail: Promise<unknown> = Promise.resolve();

  private scheduling<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.schedulingTail.then(fn, fn);
    this.schedulingTail = run.catch(() => undefined);
    return run;
  }

  /** Records a write of ours that replaced `before` (see ownWrites). */
  private wrote(before: AgentObj, written: AgentObj): void {
    const rv = before.metadata?.resourceVersion;
    if (!rv || rv === written.metadata?.resourceVersion) return;
    const key = objectKey(before);
    const replaced = this.ownWrites.get(key) ?? new Set<string>();
    this.ownWrites.set(key, replaced.add(rv));
  }

  /** The plan's binding (and finalizer): the Agent as written, or undefined when it is gone. */
  private async bind(agent: AgentObj, plan: Plan): Promise<AgentObj | undefined> {
    const ref = refOf(agent);
    try {
      if (plan.bindTo) {
        // The binding of record first, guarded by resourceVersion: a decision made on a stale read
        // must not land, and two bindings can never both succeed. status.nodeName follows. A new
        // Agent's finalizer goes in the same write (the guard covers the list it replaces).
        const finalizers = agent.metadata?.finalizers ?? [];
        const withFinalizer = plan.addFinalizer && !finalizers.includes(FINALIZER) ? { finalizers: [...finalizers, FINALIZER] } : {};
        const written = await this.agentApi.patchMeta(ref, { labels: { [NODE_LABEL]: plan.bindTo }, ...withFinalizer }, { resourceVersion: agent.metadata?.resourceVersion });
        this.wrote(agent, written);
        if (agent.metadata?.uid) this.assumed.set(agent.metadata.uid, plan.bindTo);
        return { ...written, apiVersion: API_VERSION, kind: AGENT_KIND };
      }
      if (plan.addFinalizer) {
        const written = await this.agentApi.addFinalizer(agent, FINALIZER);
        return { ...written, apiVersion: API_VERSION, kind: AGENT_KIND, status: agent.status };
      }
      return agent;
    } catch (err) {
      if (isNotFound(err)) return undefined; // gone meanwhile: nothing left to do
      throw err; // a conflict (stale read) is requeued at once by the worker, anything else with backoff
    }
  }

  /** The rest of the plan, on `current` (the Agent as bound): status, Events, children, finalizer removal, deletion. */
  private async execute(agent: AgentObj, current: AgentObj, plan: Plan): Promise<void> {
    const ref = refOf(agent);
    const log = this.log.child({ namespace: ref.namespace, name: ref.name, uid: agent.metadata?.uid });
    try {
      const statusPatch = diffStatus(pickControllerStatus(current.status ?? {}), plan.status);
      if (statusPatch) {
        // Guarded by resourceVersion: a decision made on a stale read must not land.
        const written = await this.agentApi.patchStatus(ref, statusPatch, { resourceVersion: current.metadata?.resourceVersion });
        this.wrote(current, written);
        current = { ...written, apiVersion: API_VERSION, kind: AGENT_KIND };
        log.debug({ patch: statusPatch }, 'status written');
      }
      for (const e of plan.events) {
        this.events.event({ ...current, apiVersion: API_VERSION, kind: AGENT_KIND }, e.type, e.reason, e.message);
        log.info({ event: e.reason, type: e.type }, e.message);
      }
      // After the status that records them: a child is created only once its place is committed.
      for (const child of plan.createChildren) {
        try {
          await this.agentApi.create(child);
          log.info({ child: child.metadata?.name }, 'child created');
        } catch (err) {
          if (!isConflict(err)) throw err; // 409 AlreadyExists: created before (a retry), or taken (refused next pass)
        }
      }
      for (const s of plan.stopChildren) {
        await this.agentApi.patch({ namespace: ref.namespace, name: s.name }, { spec: { stop: true, stopReason: s.reason } });
        log.info({ child: s.name }, "child stopped at its parent's request");
      }
      if (plan.removeFinalizer) {
        await this.agentApi.removeFinalizer(current, FINALIZER);
        log.info('finalizer removed');
      }
      if (plan.deleteAgent) {
        await this.agentApi.delete(ref, { uid: agent.metadata?.uid, propagationPolicy: 'Background' });
        log.info('deleted: ttlSecondsAfterFinished passed');
      }
    } catch (err) {
      if (isNotFound(err)) return; // gone meanwhile: nothing left to do
      throw err; // a conflict (stale read) is requeued at once by the worker, anything else with backoff
    }
  }

  /** Marks nodes whose sidecar went silent as Ready=Unknown, and wakes their Agents. */
  private monitorNodes(): void {
    const now = Date.now();
    for (const n of this.nodes.list()) {
      const name = n.metadata?.name ?? '';
      const view = viewNode(n, now, this.heartbeatGraceMs);
      if (view.ready) {
        this.notReady.delete(name);
        continue;
      }
      if (this.notReady.has(name)) continue;
      this.notReady.add(name);
      this.enqueueBoundTo(name);
      const stale = staleReadyCondition(view);
      const current = n.status?.conditions?.find((c) => c.type === 'Ready');
      if (stale && current?.status !== 'Unknown') {
        const conditions = setCondition(n.status?.conditions, { type: 'Ready', ...stale }, rfc3339(new Date(now)));
        this.nodeApi.patchStatus({ name }, { conditions }).then(
          () => this.events.event({ ...n, apiVersion: API_VERSION, kind: AGENT_NODE_KIND }, 'Warning', 'NodeNotReady', stale.message),
          (err: unknown) => this.log.warn({ node: name, err }, 'marking node Unknown failed'),
        );
      }
    }
  }

  private registerPhaseGauge(): void {
    const agents = this.agents;
    new Gauge({
      name: 'agent_operator_agents',
      help: 'Agents by phase, from the controller cache',
      labelNames: ['phase'],
      registers: [this.o.metrics.registry],
      collect() {
        const counts = new Map<string, number>(PHASES.map((p) => [p, 0]));
        for (const a of agents.list()) {
          const p = a.status?.phase ?? 'Pending';
          counts.set(p, (counts.get(p) ?? 0) + 1);
        }
        for (const [phase, n] of counts) this.set({ phase }, n);
      },
    });
  }
}

/** The parts of an AgentNode that matter for scheduling (not its heartbeat time). */
function schedulingView(n: NodeObj): string {
  const ready = n.status?.conditions?.find((c) => c.type === 'Ready')?.status;
  return JSON.stringify([n.metadata?.labels, n.spec?.unschedulable, n.status?.capacity, ready]);
}
