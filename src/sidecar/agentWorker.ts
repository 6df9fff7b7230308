/**
 * The per-agent sync on the node, as the kubelet's pod worker syncs one pod: gather what the node
 * knows of the agent (its files, tmux, its record), ask planAgentOnNode (decide.ts), write the
 * sidecar's status fields, then launch it, leave it running, or clean it up, moving its record
 * along (agentRecord.ts). Called by the work queue, never twice at once for one Agent.
 */
import type { Logger } from 'pino';
import type { Agent } from '../api/agent.js';
import { API_VERSION, AGENT_ENV, AGENT_KIND, DEFAULTS } from '../api/constants.js';
import { bytesOf, milliCpuOf } from '../api/quantity.js';
import { describeError } from '../kube/errors.js';
import type { Informer } from '../kube/informer.js';
import { objectKey } from '../kube/informer.js';
import { refOf, type KubeObject, type ResourceClient } from '../kube/resources.js';
import { advance, type AgentRecord, type AgentRecords } from './agentRecord.js';
import { planAgentOnNode, type LocalFacts } from './decide.js';
import type { ExitWatches } from './exitWatch.js';
import type { SidecarMetrics } from './metrics.js';
import type { ReportIntake } from './reportIntake.js';
import { ResolveError, type SpecResolver } from './resolve.js';
import { FileOperationTimeoutError } from './runtime/boundedFs.js';
import { DEFAULT_OUTPUT_MAX_BYTES, outputCapFor } from './runtime/capture.js';
import type { Limits } from './runtime/cgroup.js';
import { cleanupAgent } from './runtime/cleanup.js';
import { expandEnv } from './runtime/expand.js';
import { launch } from './runtime/launch.js';
import { interpretObservation, observeFacts, type ObservedFacts, type SessionObservation } from './runtime/observe.js';
import type { NodeSandbox } from './runtime/sandbox.js';
import { isAgentUid, tombstoneTrigger, workspacePaths } from './runtime/workspace.js';

type AgentObj = Agent & KubeObject;

/** spec.resources.limits as the runtime takes them (the API validated their syntax). */
export function limitsOf(l: NonNullable<Agent['spec']['resources']>['limits']): Limits {
  return {
    ...(l?.memory !== undefined ? { memoryBytes: bytesOf(l.memory, 'spec.resources.limits.memory') } : {}),
    ...(l?.cpu !== undefined ? { cpuMillis: milliCpuOf(l.cpu, 'spec.resources.limits.cpu') } : {}),
    ...(l?.pids !== undefined ? { pids: l.pids } : {}),
  };
}

/** A launch unfinished for longer than this is logged at every resync until it ends. */
const SLOW_LAUNCH_MS = 30_000;

export interface AgentWorkerOptions {
  nodeName: string;
  root: string;
  archiveDir: string;
  /** The `agent-operator` shim's directory, first on the session PATH. */
  binDir: string;
  sandbox: NodeSandbox;
  /** The output cap of an Agent that sets none, and the most one may set (capture.ts). */
  output?: { defaultBytes: number; limitBytes: number };
  agents: Informer<AgentObj>;
  agentApi: ResourceClient<AgentObj>;
  resolver: SpecResolver;
  records: AgentRecords;
  intake: ReportIntake;
  exits: ExitWatches;
  metrics: SidecarMetrics;
  enqueue: (key: string) => void;
  logger: Logger;
}

export class AgentWorker {
  private readonly log: Logger;

  constructor(private readonly o: AgentWorkerOptions) {
    this.log = o.logger;
  }

  /** `observed`: the facts a launch just left (its start goes into status now, not a round later). */
  async syncAgent(key: string, observed?: ObservedFacts): Promise<void> {
    const agent = this.o.agents.get(key);
    const uid = agent?.metadata?.uid;
    // The binding is the label (the controller's record, what we watch) and status.nodeName (its copy); act when both name this node.
    if (!agent || !uid || agent.status?.nodeName !== this.o.nodeName) return;
    if (!isAgentUid(uid)) {
      this.log.error({ key, uid }, 'Agent UID is not a UUID; not touching it');
      return;
    }
    const r = this.o.records.ensure(uid);
    r.key = key;
    const log = this.log.child({ namespace: agent.metadata?.namespace, name: agent.metadata?.name, uid });
    const facts = observed ?? (await observeFacts(this.o.root, uid));
    const local = await this.localFacts(r, interpretObservation(uid, facts));
    const decision = planAgentOnNode(agent, local, Date.now());
    if (decision.statusPatch) {
      await this.o.agentApi.patchStatus(refOf(agent), decision.statusPatch);
      log.debug({ patch: Object.keys(decision.statusPatch) }, 'status written');
    }
    const action = decision.action;
    switch (action.kind) {
      case 'launch': {
        const step = action.resume ?? 'none';
        advance(r, { kind: 'launchDecided', step, at: Date.now() });
        if (action.resume) {
          this.o.metrics.launchResumes.inc({ step: action.resume });
          log.warn({ step }, `resuming a launch cut short after its ${step} step`);
        }
        const launched = await this.launch(agent, r, log, facts);
        if (launched) await this.syncAgent(key, launched);
        break;
      }
      case 'cleanup':
        await this.cleanup(agent, r, action.trigger, log);
        break;
      case 'none': {
        const recorded = local.cleanup ?? agent.status?.cleanup;
        if (recorded?.completionTime) advance(r, { kind: 'cleaned', record: recorded });
        else if (local.sessionAlive) {
          // Running (also after a restart of this process): its exit is noticed as it happens.
          advance(r, { kind: 'started' });
          this.o.exits.watch(uid);
        } else advance(r, { kind: 'idle' });
        break;
      }
    }
  }

  /** Never silent: every launch begun and not finished for a while is logged, with where it stands. */
  logSlowLaunches(): void {
    const now = Date.now();
    for (const u of this.o.records.unfinishedLaunches()) {
      const ms = now - u.since;
      if (ms >= SLOW_LAUNCH_MS) this.log.warn({ uid: u.record.uid, key: u.record.key, step: u.step, seconds: Math.round(ms / 1000) }, 'launch not finished');
    }
  }

  private async localFacts(r: AgentRecord, obs: SessionObservation): Promise<LocalFacts> {
    const cleanupBegun = await tombstoneTrigger(workspacePaths(this.o.root, r.uid));
    const launchError = r.launchError ?? obs.launchError;
    const sessionLost = obs.lost && !launchError ? 'the session disappeared while its command ran (tmux server killed or node restarted)' : undefined;
    const cleanup = r.state.phase === 'cleaned' ? r.state.record : undefined;
    return {
      launch: obs.launch,
      ...(cleanupBegun ? { cleanupBegun } : {}),
      ...(obs.record ? { sessionName: obs.sessionName } : {}),
      ...(obs.startTime ? { startTime: obs.startTime } : {}),
      sessionAlive: obs.sessionAlive,
      ...(obs.exited && obs.exitCode !== undefined && !launchError ? { exitCode: obs.exitCode } : {}),
      ...(launchError ? { launchError } : {}),
      ...(r.limitsNotEnforced ? { limitsNotEnforced: r.limitsNotEnforced } : {}),
      ...(obs.record?.output ? { outputMaxBytes: obs.record.output.maxBytes } : {}),
      ...(sessionLost ? { sessionLost } : {}),
      ...(obs.lastOutputAt ? { lastOutputAt: Date.parse(obs.lastOutputAt) } : {}),
      ...(r.report ? { report: r.report } : {}),
      ...(r.findings ? { findings: r.findings } : {}),
      ...(cleanup ? { cleanup } : {}),
    };
  }

  /** The facts the launch left when it started the agent; else undefined, and the Agent is queued again. */
  private async launch(agent: AgentObj, r: AgentRecord, log: Logger, observed: ObservedFacts): Promise<ObservedFacts | undefined> {
    const ref = refOf(agent);
    const uid = r.uid;
    let resolved;
    try {
      resolved = await this.o.resolver.resolve(ref.namespace ?? '', agent.spec);
    } catch (err) {
      if (!(err instanceof ResolveError)) throw err; // transient: retried with backoff
      log.warn({ err: err.message }, 'cannot launch');
      r.launchError = err.message;
      this.o.enqueue(objectKey(agent));
      return undefined;
    }
    const sandboxed = this.o.sandbox.host.mode !== 'none';
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
        env: { ...this.o.intake.channelEnv(r), ...env },
        observed,
        ...(sandboxed
          ? {
              openChannel: async (dir: string, gid: number) => {
                await this.o.intake.openChannel(uid, dir, gid);
                log.info('report channel open');
              },
            }
          : {}),
        ...(agent.spec.workingDir ? { workingDir: agent.spec.workingDir } : {}),
        prompt: resolved.prompt,
        promptOnStdin: agent.spec.promptOnStdin ?? false,
        binDir: this.o.binDir,
        sandbox: this.o.sandbox,
        limits: limitsOf(agent.spec.resources?.limits),
        outputMaxBytes: this.outputCap(agent, log),
        logger: this.runtimeLogger(agent),
      });
      if (result.tombstoned) await this.o.intake.recoverFromArchive(r);
      if (result.limitsNotEnforced) {
        // Into the Agent's status; the controller records the Warning Event (a node's Events are about its AgentNode only).
        log.warn({ limitsNotEnforced: result.limitsNotEnforced }, 'limits not enforced on this node');
        r.limitsNotEnforced = result.limitsNotEnforced;
      }
      if (result.started) {
        advance(r, { kind: 'started' });
        this.o.exits.watch(uid);
        log.info({ session: result.sessionName }, 'agent launched');
        return result.facts;
      }
    } catch (err) {
      if (err instanceof FileOperationTimeoutError) throw err; // the node's problem: retried with backoff
      // A launch refused for its inputs is the spec's problem, not a transient one.
      log.error({ err: describeError(err) }, 'launch failed');
      r.launchError = `launch failed: ${describeError(err)}`;
    }
    this.o.enqueue(objectKey(agent));
    return undefined;
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

  /** For the runtime, which binds `uid` itself (the sweeper calls it without an Agent): one key, once per line. */
  private runtimeLogger(agent: AgentObj): Logger {
    return this.log.child({ namespace: agent.metadata?.namespace, name: agent.metadata?.name });
  }

  private async cleanup(agent: AgentObj, r: AgentRecord, trigger: string, log: Logger): Promise<void> {
    const uid = r.uid;
    advance(r, { kind: 'cleanupBegun', trigger });
    this.o.exits.unwatch(uid);
    const started = performance.now();
    const m = this.o.metrics;
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
        beforeArchive: () => this.o.intake.whenIdle(uid),
      });
      advance(r, { kind: 'cleaned', record });
      await this.o.intake.closeChannel(uid);
      m.cleanupSeconds.observe((performance.now() - started) / 1000);
      if (record.errors && record.errors.length > 0) {
        m.cleanupFailures.inc();
        log.warn({ trigger, errors: record.errors }, 'cleanup finished with errors');
      } else log.info({ trigger, ms: record.durationMilliseconds, archive: record.archivePath }, 'cleaned up');
    } catch (err) {
      m.cleanupFailures.inc();
      throw err; // retried with backoff; every step is idempotent
    } finally {
      this.o.records.cleanupEnded(r);
    }
    // Write the record now rather than at the next poll.
    this.o.enqueue(objectKey({ ...agent, apiVersion: API_VERSION, kind: AGENT_KIND }));
  }
}
