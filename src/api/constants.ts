/** Names shared by every piece: the API group, kinds, the finalizer and labels. */

export const GROUP = 'orchestrator.dev';
export const VERSION = 'v1alpha1';
export const API_VERSION = `${GROUP}/${VERSION}`;

export const AGENT_KIND = 'Agent';
export const AGENT_PLURAL = 'agents';
export const AGENT_SINGULAR = 'agent';

export const AGENT_NODE_KIND = 'AgentNode';
export const AGENT_NODE_PLURAL = 'agentnodes';
export const AGENT_NODE_SINGULAR = 'agentnode';

/** Held on every Agent until its node-side cleanup is recorded. */
export const FINALIZER = `${GROUP}/cleanup`;

/** Set at binding so each sidecar can watch only the Agents bound to its node. */
export const NODE_LABEL = `${GROUP}/node`;

/**
 * On a Namespace: the label selector (`k=v,k2=v2`) every node its Agents run on must match, as
 * PodNodeSelector's scheduler.alpha.kubernetes.io/node-selector does for Pods.
 */
export const NODE_SELECTOR_ANNOTATION = `${GROUP}/node-selector`;

/**
 * AgentNode labels under this prefix are set by admins only: a node cannot put itself into a tenant's
 * node pool (as the kubelet cannot set node-restriction.kubernetes.io/ labels on its Node).
 */
export const NODE_RESTRICTION_PREFIX = `node-restriction.${GROUP}/`;

/** The ClusterRole a namespace binds to let the node sidecars read its ConfigMaps and Secrets. */
export const REFERENCES_CLUSTER_ROLE = 'agent-operator-references';

/** On a child Agent: its parent's name, and the name of the Agent at the top of its tree. */
export const PARENT_LABEL = `${GROUP}/parent`;
export const ROOT_LABEL = `${GROUP}/root`;

/** Environment variables the sidecar injects into every session process. */
export const AGENT_ENV = {
  name: 'AGENT_NAME',
  namespace: 'AGENT_NAMESPACE',
  uid: 'AGENT_UID',
  promptFile: 'AGENT_PROMPT_FILE',
  /** The agent's own report socket (sandboxed agents): who connects there is that agent. */
  reportSocket: 'AGENT_REPORT_SOCKET',
  /** Loopback URL and bearer token: agents without a sandbox (--sandbox=none) and those launched before the socket. */
  reportUrl: 'AGENT_REPORT_URL',
  reportToken: 'AGENT_REPORT_TOKEN',
} as const;

/** Where an agent's report socket appears inside its sandbox (its node-owned channel directory, bound read-only). */
export const SANDBOX_REPORT_DIR = '/run/agent-operator';
export const REPORT_SOCKET_NAME = 'report.sock';

/** Env names a spec may not set: they are how the platform finds and trusts a session's processes. */
export const RESERVED_ENV_NAMES: readonly string[] = Object.values(AGENT_ENV);

/** The cgroup v2 controllers spec.resources.limits are written into (cpu.max, memory.max, pids.max). */
export const LIMIT_CONTROLLERS = ['cpu', 'memory', 'pids'] as const;
export type LimitController = (typeof LIMIT_CONTROLLERS)[number];

/** Defaults applied at runtime where the spec is silent (documented on the fields). */
export const DEFAULTS = {
  gracePeriodSeconds: 10,
  keepLogs: true,
  /** spec.completionChecks: a real task takes longer than this... */
  minDurationSeconds: 10,
  /** ...and reports progress at least once before it is done. */
  minProgressReports: 1,
} as const;

/** Upper bounds that keep objects well below etcd's 1.5 MiB limit and CEL cost budgets small. */
export const LIMITS = {
  promptBytes: 256 * 1024,
  commandItems: 256,
  argLength: 16 * 1024,
  envItems: 256,
  envValueLength: 32 * 1024,
  messageLength: 4096,
  gracePeriodSecondsMax: 3600,
  recentFindings: 10,
  cleanupErrors: 32,
  archivedFiles: 64,
  /**
   * Children: spawn requests live in the parent's status until it is deleted, so they are bounded
   * (48 requests of at most ~24 KiB each stay well under etcd's limit).
   */
  childrenMaxTotal: 32,
  childrenMaxDepth: 8,
  spawnRequests: 48,
  childPromptLength: 16 * 1024,
  childEnvItems: 32,
  childMessageLength: 512,
} as const;
