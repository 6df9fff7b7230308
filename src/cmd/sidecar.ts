/** `agent-operator sidecar`: the per-node agent runtime (one per node, a DaemonSet in a cluster). */
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { LabelSyntaxError, parseLabelSet } from '../api/labels.js';
import { loadKubeConfig } from '../kube/client.js';
import { DEFAULT_REPORT_CAPS } from '../report/limits.js';
import { MAX_BODY_BYTES } from '../report/protocol.js';
import { newReconcileMetrics } from '../observability/metrics.js';
import { checkAgentsCgroupName, defaultAgentsCgroupName, setupAgentCgroups } from '../sidecar/runtime/cgroup.js';
import { nodeSandbox, SANDBOX_MODES, type SandboxMode } from '../sidecar/runtime/sandbox.js';
import { DEFAULT_UID_RANGE, parseUidRange } from '../sidecar/runtime/uids.js';
import { DEFAULT_STALL_THRESHOLD_MS } from '../sidecar/progress.js';
import { DEFAULT_FILE_OPERATION_TIMEOUT_MS, setFileOperationTimeout } from '../sidecar/runtime/boundedFs.js';
import { NodeSidecar } from '../sidecar/sidecar.js';
import { helpText, intFlag, parseFlags, sizeFlag, UsageError, type FlagSpec } from './flags.js';
import { MIN_OUTPUT_BYTES } from '../sidecar/runtime/capture.js';
import type { RetentionPolicy } from '../sidecar/runtime/retention.js';
import { serve } from './serve.js';
import { VERSION } from './version.js';

const FLAGS: FlagSpec = {
  'node-name': { type: 'string', help: 'name of this node (its AgentNode); required (default: $NODE_NAME)' },
  root: { type: 'string', help: 'node root: workspaces, the tmux socket, state; required' },
  'archive-dir': { type: 'string', help: 'where logs of finished agents are archived (default: <root>/archive)' },
  capacity: { type: 'string', default: '4', help: 'agents this node runs at once' },
  workers: { type: 'string', help: 'concurrent reconciles (default: capacity + 2, at least 4: every agent can be launching or cleaning up at once)' },
  labels: { type: 'string', help: 'labels of the AgentNode, for nodeSelector: k=v,k2=v2' },
  'report-port': { type: 'string', help: 'loopback port of the report endpoint for agents without a sandbox (default: the one used before, else a free one)' },
  'report-max-per-minute': {
    type: 'string',
    default: String(DEFAULT_REPORT_CAPS.maxPerMinute),
    help: 'reports one agent may send per minute (a burst up to it, then at that rate); more are refused with 429',
  },
  'report-max-bytes-per-minute': {
    type: 'string',
    default: String(DEFAULT_REPORT_CAPS.maxBytesPerMinute),
    help: `report bytes one agent may send per minute (at least ${MAX_BODY_BYTES}, the largest report); more are refused with 429`,
  },
  kubeconfig: { type: 'string', help: 'kubeconfig file (default: $KUBECONFIG, then in-cluster)' },
  'metrics-bind-address': { type: 'string', default: ':8090', help: 'address of /metrics' },
  'health-probe-bind-address': { type: 'string', default: ':8091', help: 'address of /healthz and /readyz' },
  'poll-interval-ms': { type: 'string', default: '1000', help: 'how often running sessions are checked for exit and output' },
  'heartbeat-interval-seconds': { type: 'string', default: '10', help: 'how often the AgentNode heartbeat is posted' },
  'sweep-interval-seconds': { type: 'string', default: '60', help: 'how often the node is swept for orphans' },
  'sweep-min-age-seconds': { type: 'string', default: '60', help: 'how old an orphan (a session or workspace no Agent accounts for) must be before it is swept' },
  sandbox: {
    type: 'string',
    default: 'bwrap',
    help: 'how agents are confined: bwrap (own uid, namespaces; see docs/install.md) or none (trusted single-tenant nodes only: agents run as the sidecar)',
  },
  'agent-uid-range': { type: 'string', default: DEFAULT_UID_RANGE, help: "uids (and gids) given to agents, one per live agent: FIRST-LAST, excluding 0 and the sidecar's uid" },
  'agents-cgroup': {
    type: 'string',
    help: "the cgroup, under the sidecar's own, that holds one leaf per agent (default: agent-operator-<node-name>); sidecars that share a cgroup (simulated nodes of several stacks on one machine) each need their own",
  },
  'sandbox-shared-dir': {
    type: 'string',
    help: 'a directory every agent on this node sees read-write at the same path (a shared cache; it is shared between agents, so they are no longer isolated there)',
  },
  'health-stall-threshold-seconds': {
    type: 'string',
    default: String(DEFAULT_STALL_THRESHOLD_MS / 1000),
    help: "/healthz fails when the relist of the node's agents has not completed a pass for this long while there is work (docs/install.md)",
  },
  'file-operation-timeout-seconds': {
    type: 'string',
    default: String(DEFAULT_FILE_OPERATION_TIMEOUT_MS / 1000),
    help: 'bound of every file operation on the node; one that takes longer fails (and is retried with backoff)',
  },
  'output-max-size': {
    type: 'string',
    default: '10Mi',
    help: "the most of an agent's output kept on this node when its spec.output.maxSize is unset: its first half and its last bytes (a quantity: 10Mi, 1G)",
  },
  'output-max-size-limit': { type: 'string', default: '100Mi', help: "the most any agent's spec.output.maxSize gets on this node (a larger one is lowered to this, with a Warning Event)" },
  'report-journal-max-size': {
    type: 'string',
    default: '4Mi',
    help: 'the most each report journal of one agent (reports.jsonl, findings.jsonl) holds; past it, reports of that kind are refused (507)',
  },
  'archive-max-age-seconds': { type: 'string', default: '604800', help: 'archives older than this are deleted (0: no age limit)' },
  'archive-max-size': { type: 'string', default: '10Gi', help: 'the archives together keep at most this much; the oldest are deleted first (a quantity; 0: no size limit)' },
  'log-level': { type: 'string', default: 'info', help: 'pino log level' },
};

const USAGE =
  'Usage: agent-operator sidecar --node-name NAME --root DIR [options]\n\nRuns the Agents bound to this node in tmux sessions and cleans each one up when it ends. Stopping it never stops running sessions.';

export function parseLabels(text: string | undefined): Record<string, string> {
  try {
    return parseLabelSet(text);
  } catch (err) {
    if (err instanceof LabelSyntaxError) throw new UsageError(`--labels: ${err.message}`);
    throw err;
  }
}

/** The retention flags as a policy (pure): 0 means no limit of that kind. */
export function retentionPolicy(maxAgeSeconds: number, maxBytes: number): RetentionPolicy {
  return { ...(maxAgeSeconds > 0 ? { maxAgeMs: maxAgeSeconds * 1000 } : {}), ...(maxBytes > 0 ? { maxBytes } : {}) };
}

export async function runSidecar(argv: string[]): Promise<number> {
  const flags = parseFlags(argv, FLAGS);
  if (flags.help) {
    console.log(helpText(USAGE, FLAGS));
    return 0;
  }
  const nodeName = (flags['node-name'] as string | undefined) ?? process.env.NODE_NAME;
  if (!nodeName) throw new UsageError('--node-name is required (or set NODE_NAME)');
  if (nodeName.length > 63 || !/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(nodeName)) {
    throw new UsageError(`--node-name: "${nodeName}" must be a DNS label (lowercase letters, digits, '-', at most 63)`);
  }
  if (!flags.root) throw new UsageError('--root is required');
  const root = resolve(String(flags.root));
  const archiveDir = resolve((flags['archive-dir'] as string | undefined) ?? `${root}/archive`);
  const tuning = {
    capacity: intFlag(flags, 'capacity', 0, 10_000),
    ...(flags.workers !== undefined ? { workers: intFlag(flags, 'workers', 1, 1000) } : {}),
    pollIntervalMs: intFlag(flags, 'poll-interval-ms', 50, 60_000),
    heartbeatIntervalMs: intFlag(flags, 'heartbeat-interval-seconds', 1, 3600) * 1000,
    sweepIntervalMs: intFlag(flags, 'sweep-interval-seconds', 1, 86_400) * 1000,
    sweepMinAgeSeconds: intFlag(flags, 'sweep-min-age-seconds', 0, 86_400),
    stallThresholdMs: intFlag(flags, 'health-stall-threshold-seconds', 1, 86_400) * 1000,
    ...(flags['report-port'] !== undefined ? { reportPort: intFlag(flags, 'report-port', 1, 65_535) } : {}),
    reportCaps: {
      maxPerMinute: intFlag(flags, 'report-max-per-minute', 1, 1_000_000),
      maxBytesPerMinute: intFlag(flags, 'report-max-bytes-per-minute', MAX_BODY_BYTES, 2 ** 40),
    },
    output: { defaultBytes: sizeFlag(flags, 'output-max-size', MIN_OUTPUT_BYTES), limitBytes: sizeFlag(flags, 'output-max-size-limit', MIN_OUTPUT_BYTES) },
    journalMaxBytes: sizeFlag(flags, 'report-journal-max-size', 1024),
    archiveRetention: retentionPolicy(intFlag(flags, 'archive-max-age-seconds', 0, 100 * 365 * 86_400), sizeFlag(flags, 'archive-max-size', 0)),
  };
  if (tuning.output.defaultBytes > tuning.output.limitBytes)
    throw new UsageError(`--output-max-size (${tuning.output.defaultBytes} bytes) is above --output-max-size-limit (${tuning.output.limitBytes} bytes)`);
  const labels = parseLabels(flags.labels as string | undefined);
  const fileOperationTimeoutMs = intFlag(flags, 'file-operation-timeout-seconds', 1, 3600) * 1000;
  setFileOperationTimeout(fileOperationTimeoutMs);
  // Not pino's `name`: lines about an Agent carry the Agent's name under that key. NodeSidecar binds `node`.
  const logger = pino({ level: String(flags['log-level']) }).child({ service: 'sidecar' });
  const mode = String(flags.sandbox) as SandboxMode;
  if (!SANDBOX_MODES.includes(mode)) throw new UsageError(`--sandbox: "${mode}" is not one of ${SANDBOX_MODES.join(', ')}`);
  let uids;
  try {
    uids = parseUidRange(String(flags['agent-uid-range']), [0, process.getuid?.() ?? 0]);
  } catch (err) {
    throw new UsageError(`--agent-uid-range: ${(err as Error).message}`);
  }
  const agentsCgroup = (flags['agents-cgroup'] as string | undefined) ?? defaultAgentsCgroupName(nodeName);
  try {
    checkAgentsCgroupName(agentsCgroup);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const cliPath = fileURLToPath(new URL('../cli.js', import.meta.url));
  // The shim runs node on this installation: both visible, read-only, in every sandbox.
  // One cgroup v2 leaf per agent, under this sidecar's own cgroup (required with the sandbox).
  let cgroups;
  try {
    cgroups = await setupAgentCgroups(agentsCgroup);
  } catch (err) {
    if (mode !== 'none') throw err;
    logger.warn({ err: (err as Error).message }, 'no cgroup for agents: stopping and verifying rest on the process scan alone');
  }
  const shared = flags['sandbox-shared-dir'] !== undefined ? [resolve(String(flags['sandbox-shared-dir']))] : [];
  const sandbox = await nodeSandbox(mode, uids, [resolve(dirname(cliPath), '../..'), dirname(process.execPath)], cgroups, shared);
  const kc = loadKubeConfig(flags.kubeconfig as string | undefined);
  const metrics = newReconcileMetrics();
  const sidecar = new NodeSidecar({
    kubeConfig: kc,
    logger,
    metrics,
    nodeName,
    root,
    archiveDir,
    labels,
    cliPath,
    sandbox,
    ...(flags.kubeconfig !== undefined || process.env.KUBECONFIG ? { kubeconfigPath: resolve(String(flags.kubeconfig ?? process.env.KUBECONFIG)) } : {}),
    version: VERSION,
    ...tuning,
  });
  return serve({
    name: 'sidecar',
    logger,
    kubeConfig: kc,
    metrics,
    flags,
    readyz: {
      informer: () => (sidecar.hasSynced() ? undefined : 'agent cache not synced'),
      heartbeat: () => (sidecar.heartbeatHealthy() ? undefined : 'no recent heartbeat'),
    },
    healthz: { progress: () => sidecar.progressProblem() },
    facts: { root, archiveDir, sandbox: mode, fileOperationTimeoutMs, ...(cgroups ? { agentsCgroup: cgroups.dir } : {}), ...tuning },
    onShutdown: 'agent sessions keep running',
    run: (stop) => sidecar.run(stop),
  });
}
