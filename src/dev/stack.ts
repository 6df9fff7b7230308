/**
 * The local stack: a real control plane, the CRDs, RBAC and admission policies from deploy/, the
 * controller (leader-elected) and N node sidecars, each a real process running under the
 * ServiceAccount deploy/ gives it, each sidecar with its own root directory and tmux socket (a
 * simulated node). Each simulated node is a core/v1 Node object too, and its sidecar's token is bound
 * to it (TokenRequest with a Node boundObjectRef), so the token names the node as a pod-bound token
 * on a real node does, and the policies hold each sidecar to its own node. Used by
 * `agent-operator dev`, `npm run demo` and the integration tests.
 */
import { createHash } from 'node:crypto';
import { chmod, mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CoreV1Api, KubeConfig, RbacAuthorizationV1Api } from '@kubernetes/client-node';
import { parseAllDocuments } from 'yaml';
import type { Logger } from 'pino';
import { CONTROLLER_SERVICE_ACCOUNT, OPERATOR_NAMESPACE, referencesRoleBinding, SIDECAR_SERVICE_ACCOUNT } from '../api/references.js';
import { CRASH_FILE_ENV } from '../sidecar/runtime/crashPoint.js';
import { STALL_DIR_ENV } from '../sidecar/runtime/stallPoint.js';
import { agentCgroupDir, defaultAgentsCgroupName, removeAgentCgroups } from '../sidecar/runtime/cgroup.js';
import { groupByAgent, listProcesses, sendSignal } from '../sidecar/runtime/procfs.js';
import { killServer } from '../sidecar/runtime/tmux.js';
import { apiErrorCode } from './apiErrors.js';
import { startControlPlane, type BoundObject, type ControlPlane, type ControlPlaneClient } from './controlPlane.js';
import { envFileLines } from './controlPlaneCommand.js';
import { PACKAGE_ROOT } from './paths.js';
import { freePorts } from './ports.js';
import { startProcess, type ManagedProcess } from './processes.js';

export { CONTROLLER_SERVICE_ACCOUNT, OPERATOR_NAMESPACE, SIDECAR_SERVICE_ACCOUNT } from '../api/references.js';
const CLI = join(PACKAGE_ROOT, 'dist', 'src', 'cli.js');
/** On the core/v1 Nodes the stack creates for its simulated nodes. */
const SIMULATED_NODE_LABEL = 'agent-operator.dev/simulated';
/** What the stack takes from deploy/: everything that is not a workload (there is no kubelet here). */
const INSTALLED_KINDS = new Set([
  'Namespace',
  'CustomResourceDefinition',
  'ServiceAccount',
  'ClusterRole',
  'ClusterRoleBinding',
  'Role',
  'RoleBinding',
  'ValidatingAdmissionPolicy',
  'ValidatingAdmissionPolicyBinding',
]);

export interface StackOptions {
  stateDir: string;
  logger: Logger;
  /** Use a running control plane (tests); otherwise one is started (and stopped with the stack). */
  controlPlane?: ControlPlaneClient;
  /** Node names; default node-1..node-N. */
  nodes?: string[] | number;
  capacity?: number;
  controllers?: number;
  /** Labels per node, for nodeSelector tests. */
  nodeLabels?: (node: string, index: number) => Record<string, string>;
  nodeLostGraceSeconds?: number;
  heartbeatGraceSeconds?: number;
  launchTimeoutSeconds?: number;
  /** Arm the sidecars' crash points (runtime/crashPoint.ts): NodeHandle.crashFile names the step to die after. */
  crashPoints?: boolean;
  /** Arm the sidecars' stall points (runtime/stallPoint.ts): a FIFO planted in NodeHandle.stallDir stalls that step. */
  stallPoints?: boolean;
  /** The sidecars' --health-stall-threshold-seconds and --file-operation-timeout-seconds (their defaults otherwise). */
  healthStallThresholdSeconds?: number;
  fileOperationTimeoutSeconds?: number;
  heartbeatIntervalSeconds?: number;
  pollIntervalMs?: number;
  sweepIntervalSeconds?: number;
  /** How old an orphan must be before the sweeper takes it (sidecar default: 60). */
  sweepMinAgeSeconds?: number;
  logLevel?: string;
  /** More flags for every sidecar (e.g. its report caps, output cap and archive retention). */
  sidecarArgs?: string[];
}

export interface Component {
  readonly name: string;
  readonly metricsUrl: string;
  readonly healthUrl: string;
  process(): ManagedProcess | undefined;
}

export interface NodeHandle extends Component {
  readonly root: string;
  readonly archiveDir: string;
  /** With StackOptions.crashPoints: the file whose content names the step this node's sidecar dies right after. */
  readonly crashFile?: string;
  /** With StackOptions.stallPoints: where a FIFO named after a stall point stalls this node's sidecar there. */
  readonly stallDir?: string;
  /** The sidecar's kubeconfig: its ServiceAccount token, bound to this node's core/v1 Node. */
  readonly kubeconfig: string;
  /** The name of its agents' cgroup (--agents-cgroup; cgroup.ts agentCgroupDir finds it). */
  readonly agentsCgroup: string;
}

/**
 * A simulated node's agents' cgroup (pure): its stack's own, whatever the node is called. Every
 * stack on a machine puts its nodes' cgroups in the same parent, and `node-1` is the default name
 * of all of them; named by the node alone, the stack that stops first would cgroup.kill and remove
 * the others' agents. Derived from the state directory, so a stack restarted on it finds its own.
 */
export function stackAgentsCgroup(stateDir: string, node: string): string {
  return `${defaultAgentsCgroupName(node)}-${createHash('sha256').update(resolve(stateDir)).digest('hex').slice(0, 10)}`;
}

interface Spec {
  name: string;
  args: string[];
  env?: Record<string, string>;
  metricsUrl: string;
  healthUrl: string;
  proc?: ManagedProcess;
}

export class Stack {
  readonly envPath: string;
  private readonly controllers: Spec[] = [];
  private readonly sidecars = new Map<string, Spec & { root: string; archiveDir: string; kubeconfig: string; agentsCgroup: string; crashFile?: string; stallDir?: string }>();
  private stopping: Promise<void> | undefined;

  private constructor(
    readonly controlPlane: ControlPlaneClient,
    private readonly ownControlPlane: ControlPlane | undefined,
    private readonly o: StackOptions,
  ) {
    this.envPath = join(o.stateDir, 'env');
  }

  static async start(o: StackOptions): Promise<Stack> {
    const stateDir = resolve(o.stateDir);
    await mkdir(stateDir, { recursive: true });
    // Sandboxed agents' uids pass through to their workspaces under nodes/<node>/ (and see nothing else).
    await chmod(stateDir, 0o711);
    await mkdir(join(stateDir, 'nodes'), { recursive: true });
    await chmod(join(stateDir, 'nodes'), 0o711);
    // What the tests' agents share with them (gates): every agent uid writes it, as /tmp.
    await mkdir(join(stateDir, 'shared'), { recursive: true });
    await chmod(join(stateDir, 'shared'), 0o1777);
    const own = o.controlPlane ? undefined : await startControlPlane({ stateDir: join(stateDir, 'control-plane'), logger: o.logger });
    const stack = new Stack(o.controlPlane ?? own!, own, { ...o, stateDir });
    try {
      await stack.install();
      await stack.prepare();
      await Promise.all([...stack.controllers.map((c) => stack.launch(c)), ...[...stack.sidecars.values()].map((s) => stack.launch(s))]);
      await Promise.all([...stack.controllers, ...stack.sidecars.values()].map((c) => stack.waitReady(c)));
      await stack.writeEnv();
    } catch (err) {
      await stack.stop();
      throw err;
    }
    o.logger.info({ nodes: [...stack.sidecars.keys()], controllers: stack.controllers.length, env: stack.envPath }, 'stack ready');
    return stack;
  }

  /** A directory every agent of the stack's nodes sees read-write (--sandbox-shared-dir). */
  get sharedDir(): string {
    return join(this.o.stateDir, 'shared');
  }

  get nodes(): NodeHandle[] {
    return [...this.sidecars.values()].map((s) => this.handle(s));
  }

  node(name: string): NodeHandle {
    const s = this.sidecars.get(name);
    if (!s) throw new Error(`no node ${name} in this stack`);
    return this.handle(s);
  }

  get controllerComponents(): Component[] {
    return this.controllers.map((c) => this.handle(c));
  }

  /** Stops a component: SIGTERM (graceful), or SIGKILL to simulate a crash. */
  async stopComponent(name: string, how: 'graceful' | 'kill' = 'graceful'): Promise<void> {
    const spec = this.spec(name);
    const proc = spec.proc;
    if (!proc?.running()) return;
    if (how === 'kill') {
      process.kill(proc.pid, 'SIGKILL');
      await proc.exited;
    } else await proc.stop(30_000);
  }

  /** Starts a stopped component again with the same arguments (and ports, and root). */
  async startComponent(name: string): Promise<void> {
    const spec = this.spec(name);
    if (spec.proc?.running()) return;
    await this.launch(spec);
    await this.waitReady(spec);
  }

  /** Stops every component and the control plane if the stack started it; kills what the simulated nodes ran. */
  stop(): Promise<void> {
    return (this.stopping ??= (async () => {
      // Sidecars first: a controller that outlives them would start giving their nodes up.
      await Promise.all([...this.sidecars.values()].map(async (s) => s.proc?.stop(30_000)));
      await Promise.all(this.controllers.map(async (c) => c.proc?.stop(30_000)));
      // Sessions outlive sidecars by design; the stack is not a node, so it ends them itself.
      for (const s of this.sidecars.values()) {
        await killNodeLeftovers(s.root, this.o.logger);
        const cgroups = await agentCgroupDir(s.agentsCgroup);
        if (cgroups) await removeAgentCgroups(cgroups);
      }
      await rm(this.envPath, { force: true });
      if (this.ownControlPlane) await this.ownControlPlane.stop();
      else await this.removeNodes();
    })());
  }

  /**
   * On a control plane that outlives the stack, its simulated nodes leave the cluster with it: their
   * heartbeats stay fresh for a while, and the next stack's scheduler must not bind Agents to them.
   * Their Node objects go too (which also ends their sidecars' tokens).
   */
  private async removeNodes(): Promise<void> {
    const names = [...this.sidecars.keys()];
    if (names.length === 0) return;
    for (const kind of ['agentnodes', 'nodes']) {
      const r = await this.controlPlane
        .kubectl(['delete', kind, ...names, '--ignore-not-found', '--wait=false'], { timeoutMs: 30_000 })
        .catch((err: unknown) => ({ exitCode: 1, stderr: String(err) }));
      if (r.exitCode !== 0) this.o.logger.warn({ nodes: names, kind, stderr: r.stderr }, 'removing the nodes failed');
    }
  }

  private handle<S extends Spec>(s: S): S extends { root: string } ? NodeHandle : Component {
    const node = 'root' in s ? (s as unknown as NodeHandle) : undefined;
    return {
      name: s.name,
      metricsUrl: s.metricsUrl,
      healthUrl: s.healthUrl,
      process: () => s.proc,
      ...(node
        ? {
            root: node.root,
            archiveDir: node.archiveDir,
            kubeconfig: node.kubeconfig,
            agentsCgroup: node.agentsCgroup,
            ...(node.crashFile ? { crashFile: node.crashFile } : {}),
            ...(node.stallDir ? { stallDir: node.stallDir } : {}),
          }
        : {}),
    } as never;
  }

  private spec(name: string): Spec {
    const s = this.controllers.find((c) => c.name === name) ?? this.sidecars.get(name);
    if (!s) throw new Error(`no component ${name} in this stack`);
    return s;
  }

  /** CRDs, namespace, RBAC and admission policies exactly as deploy/ defines them (kustomize-built by kubectl). */
  private async install(): Promise<void> {
    const built = await this.controlPlane.kubectl(['kustomize', join(PACKAGE_ROOT, 'deploy')], { timeoutMs: 60_000 });
    if (built.exitCode !== 0) throw new Error(`kubectl kustomize deploy/ failed: ${built.stderr}`);
    const docs = parseAllDocuments(built.stdout)
      .map((d) => d.toJS() as { kind?: string } | null)
      .filter((d): d is { kind: string } => !!d && INSTALLED_KINDS.has(d.kind ?? ''));
    const input = docs.map((d) => JSON.stringify(d)).join('\n');
    const applied = await this.controlPlane.kubectl(['apply', '--server-side', '--force-conflicts', '--field-manager=agent-operator-dev', '-f', '-'], { input, timeoutMs: 60_000 });
    if (applied.exitCode !== 0) throw new Error(`installing deploy/ (CRDs, RBAC, admission policies) failed: ${applied.stderr}`);
    const established = await this.controlPlane.kubectl(['wait', '--for=condition=Established', '--timeout=60s', 'crd/agents.orchestrator.dev', 'crd/agentnodes.orchestrator.dev'], {
      timeoutMs: 70_000,
    });
    if (established.exitCode !== 0) throw new Error(`CRDs not established: ${established.stderr}`);
  }

  private async kubeconfigFor(serviceAccount: string, boundTo?: BoundObject): Promise<string> {
    return this.controlPlane.serviceAccountKubeconfig(OPERATOR_NAMESPACE, serviceAccount, { expirationSeconds: 7 * 24 * 3600, ...(boundTo ? { boundTo } : {}) });
  }

  private ensureNode(name: string): Promise<BoundObject> {
    return ensureNodeObject(this.adminConfig(), name);
  }

  private adminConfig(): KubeConfig {
    const kc = new KubeConfig();
    kc.loadFromFile(this.controlPlane.kubeconfigPath);
    return kc;
  }

  private async prepare(): Promise<void> {
    const o = this.o;
    const names = Array.isArray(o.nodes) ? o.nodes : Array.from({ length: o.nodes ?? 2 }, (_, i) => `node-${i + 1}`);
    const nControllers = o.controllers ?? 1;
    const ports = await freePorts(2 * (nControllers + names.length));
    const url = () => `127.0.0.1:${ports.shift()}`;
    const logLevel = ['--log-level', o.logLevel ?? 'info'];
    const controllerKc = await this.kubeconfigFor(CONTROLLER_SERVICE_ACCOUNT);
    for (let i = 0; i < nControllers; i++) {
      const [m, h] = [url(), url()];
      this.controllers.push({
        name: `controller-${i + 1}`,
        metricsUrl: `http://${m}`,
        healthUrl: `http://${h}`,
        args: [
          'controller',
          '--kubeconfig',
          controllerKc,
          '--leader-elect',
          '--leader-election-namespace',
          OPERATOR_NAMESPACE,
          '--metrics-bind-address',
          m,
          '--health-probe-bind-address',
          h,
          '--node-lost-grace-seconds',
          String(o.nodeLostGraceSeconds ?? 60),
          '--heartbeat-grace-seconds',
          String(o.heartbeatGraceSeconds ?? 40),
          ...(o.launchTimeoutSeconds !== undefined ? ['--launch-timeout-seconds', String(o.launchTimeoutSeconds)] : []),
          ...logLevel,
        ],
      });
    }
    const uidBase = 1_000_000 + (process.pid % 4096) * 4096;
    for (const [i, node] of names.entries()) {
      // Each node its own credential, naming it (authentication.kubernetes.io/node-name).
      const sidecarKc = await this.kubeconfigFor(SIDECAR_SERVICE_ACCOUNT, await this.ensureNode(node));
      const root = join(o.stateDir, 'nodes', node);
      const archiveDir = join(root, 'archive');
      const labels = o.nodeLabels?.(node, i) ?? {};
      const [m, h] = [url(), url()];
      const crashFile = o.crashPoints ? join(o.stateDir, 'nodes', `${node}.crash-after`) : undefined;
      const stallDir = o.stallPoints ? join(o.stateDir, 'nodes', `${node}.stall`) : undefined;
      if (stallDir) await mkdir(stallDir, { recursive: true, mode: 0o700 });
      const env = { ...(crashFile ? { [CRASH_FILE_ENV]: crashFile } : {}), ...(stallDir ? { [STALL_DIR_ENV]: stallDir } : {}) };
      const agentsCgroup = stackAgentsCgroup(o.stateDir, node);
      this.sidecars.set(node, {
        name: node,
        root,
        archiveDir,
        kubeconfig: sidecarKc,
        agentsCgroup,
        ...(crashFile ? { crashFile } : {}),
        ...(stallDir ? { stallDir } : {}),
        ...(Object.keys(env).length > 0 ? { env } : {}),
        metricsUrl: `http://${m}`,
        healthUrl: `http://${h}`,
        args: [
          'sidecar',
          '--kubeconfig',
          sidecarKc,
          '--node-name',
          node,
          '--root',
          root,
          '--archive-dir',
          archiveDir,
          '--capacity',
          String(o.capacity ?? 4),
          // Simulated nodes share one machine, and stacks of concurrent processes too: each node its
          // own uids (256 from a base chosen by pid), as two real nodes' agents never meet.
          '--sandbox-shared-dir',
          this.sharedDir,
          '--agent-uid-range',
          `${uidBase + i * 256}-${uidBase + i * 256 + 255}`,
          '--agents-cgroup',
          agentsCgroup,
          '--metrics-bind-address',
          m,
          '--health-probe-bind-address',
          h,
          '--poll-interval-ms',
          String(o.pollIntervalMs ?? 500),
          '--heartbeat-interval-seconds',
          String(o.heartbeatIntervalSeconds ?? 5),
          '--sweep-interval-seconds',
          String(o.sweepIntervalSeconds ?? 30),
          ...(o.sweepMinAgeSeconds !== undefined ? ['--sweep-min-age-seconds', String(o.sweepMinAgeSeconds)] : []),
          ...(o.healthStallThresholdSeconds !== undefined ? ['--health-stall-threshold-seconds', String(o.healthStallThresholdSeconds)] : []),
          ...(o.fileOperationTimeoutSeconds !== undefined ? ['--file-operation-timeout-seconds', String(o.fileOperationTimeoutSeconds)] : []),
          ...(Object.keys(labels).length > 0
            ? [
                '--labels',
                Object.entries(labels)
                  .map(([k, v]) => `${k}=${v}`)
                  .join(','),
              ]
            : []),
          ...(o.sidecarArgs ?? []),
          ...logLevel,
        ],
      });
    }
  }

  private async launch(spec: Spec): Promise<void> {
    spec.proc = await startProcess({ name: spec.name, command: process.execPath, args: [CLI, ...spec.args], stateDir: this.o.stateDir, logger: this.o.logger, ...(spec.env ? { env: spec.env } : {}) });
  }

  private async waitReady(spec: Spec, timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last = '';
    while (Date.now() < deadline) {
      if (!spec.proc?.running()) throw new Error(`${spec.name} exited during startup:\n${spec.proc?.logTail() ?? ''}`);
      try {
        const res = await fetch(`${spec.healthUrl}/readyz`, { signal: AbortSignal.timeout(2000) });
        if (res.ok) return;
        last = await res.text();
      } catch (err) {
        last = String(err);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(`${spec.name} not ready after ${timeoutMs} ms (${last.trim()}):\n${spec.proc?.logTail() ?? ''}`);
  }

  private async writeEnv(): Promise<void> {
    const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
    // A stack may run no controller of its own (the image test runs one in a container).
    const c = this.controllers[0];
    const lines = [
      ...envFileLines(this.controlPlane.kubeconfigPath, this.controlPlane.binDir),
      ...(c ? [`export CONTROLLER_METRICS_URL=${q(`${c.metricsUrl}/metrics`)}`, `export CONTROLLER_HEALTH_URL=${q(c.healthUrl)}`] : []),
    ];
    await writeFile(this.envPath, `${lines.join('\n')}\n`);
  }
}

/**
 * Opts a namespace in to the sidecars' reads of its ConfigMaps and Secrets (the RoleBinding the
 * README's one command creates); already opted in is fine.
 */
/**
 * The core/v1 Node a simulated node's sidecar token is bound to (kept if it exists: its uid is in
 * tokens), so the token names the node as a pod-bound one does and the node policies admit it.
 */
export async function ensureNodeObject(kc: KubeConfig, name: string): Promise<BoundObject> {
  const core = kc.makeApiClient(CoreV1Api);
  try {
    const created = await core.createNode({ body: { metadata: { name, labels: { [SIMULATED_NODE_LABEL]: 'true' } } } });
    return { kind: 'Node', name, uid: created.metadata!.uid! };
  } catch (err) {
    if (apiErrorCode(err) !== 409) throw err;
    const existing = await core.readNode({ name });
    return { kind: 'Node', name, uid: existing.metadata!.uid! };
  }
}

export async function optInReferences(kc: KubeConfig, namespace: string): Promise<void> {
  try {
    await kc.makeApiClient(RbacAuthorizationV1Api).createNamespacedRoleBinding({ namespace, body: referencesRoleBinding(namespace) });
  } catch (err) {
    if (apiErrorCode(err) !== 409) throw err;
  }
}

/**
 * Ends what the stacks whose state dirs are in `dir` left when they could not stop themselves (their
 * test process killed: an interrupted or timed-out run): each simulated node's tmux server and agent
 * processes, and its agents' cgroup. The test runner calls it before it removes its temporary directory.
 */
export async function reapStacks(dir: string, logger: Logger): Promise<void> {
  const subdirs = async (d: string) => (await readdir(d, { withFileTypes: true }).catch(() => [])).filter((e) => e.isDirectory()).map((e) => e.name);
  for (const stack of await subdirs(dir)) {
    const stateDir = join(dir, stack);
    // Node roots; a `<node>.stall` directory beside one holds the test's stall points.
    for (const node of (await subdirs(join(stateDir, 'nodes'))).filter((n) => !n.endsWith('.stall'))) {
      await killNodeLeftovers(join(stateDir, 'nodes', node), logger);
      const cgroups = await agentCgroupDir(stackAgentsCgroup(stateDir, node));
      if (cgroups) await removeAgentCgroups(cgroups);
    }
  }
}

/** Kills a simulated node's tmux server and every process carrying an agent marker of its root. */
export async function killNodeLeftovers(root: string, logger: Logger, timeoutMs = 10_000): Promise<void> {
  await killServer(root).catch((err: unknown) => logger.warn({ root, err }, 'killing the tmux server failed'));
  // Rounds until none is left: a process seen in one pass may fork a child before its SIGKILL lands.
  const deadline = Date.now() + timeoutMs;
  let killed = 0;
  for (;;) {
    const procs = [...groupByAgent(await listProcesses(), root).values()].flat();
    if (procs.length === 0) break;
    if (Date.now() > deadline) {
      logger.warn({ root, pids: procs.map((p) => p.pid) }, 'agent processes left on the node survived SIGKILL');
      break;
    }
    for (const p of procs) if (sendSignal(p.pid, 'SIGKILL')) killed++;
    await sleep(20);
  }
  if (killed > 0) logger.info({ root, killed }, 'killed agent processes left on the node');
}
