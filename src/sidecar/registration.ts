/**
 * The node's AgentNode: registered on start (as a kubelet registers its Node) and heartbeated, so
 * admins see readiness, capacity and the running count with `kubectl get agentnodes`, and the
 * controller sees a silent node.
 */
import type { Logger } from 'pino';
import type { AgentNode, AgentNodeStatus } from '../api/agentNode.js';
import { setCondition, type ConditionInput } from '../api/conditions.js';
import { AGENT_NODE_KIND, API_VERSION } from '../api/constants.js';
import { rfc3339 } from '../api/time.js';
import { describeError, isConflict } from '../kube/errors.js';
import type { KubeObject, ResourceClient } from '../kube/resources.js';

type NodeObj = AgentNode & KubeObject;

export interface RegistrationOptions {
  api: ResourceClient<NodeObj>;
  nodeName: string;
  labels: Record<string, string>;
  capacity: number;
  version: string;
  logger: Logger;
}

/** Creates the AgentNode if missing and makes its labels include ours. */
export async function registerNode(o: RegistrationOptions): Promise<NodeObj> {
  const existing = await o.api.find({ name: o.nodeName });
  if (!existing) {
    try {
      const created = await o.api.create({ apiVersion: API_VERSION, kind: AGENT_NODE_KIND, metadata: { name: o.nodeName, labels: o.labels }, spec: {} });
      o.logger.info('registered AgentNode');
      return created;
    } catch (err) {
      if (!isConflict(err)) throw err; // 409 AlreadyExists: another start raced us; carry on
    }
  }
  const current = existing ?? (await o.api.get({ name: o.nodeName }));
  const missing = Object.entries(o.labels).filter(([k, v]) => current.metadata?.labels?.[k] !== v);
  if (missing.length === 0) return current;
  return o.api.patchMeta({ name: o.nodeName }, { labels: Object.fromEntries(missing) });
}

/**
 * The status a heartbeat writes (pure). A sidecar that stopped making progress (`stalled`, from
 * progress.ts) still beats but says it is not Ready, as a kubelet whose PLEG is unhealthy does, so
 * the controller places no new agent on it.
 */
export function heartbeatStatus(current: AgentNodeStatus | undefined, o: { capacity: number; running: number; version: string; now: Date; stalled?: string }): AgentNodeStatus {
  const now = rfc3339(o.now);
  const ready: ConditionInput = o.stalled
    ? { type: 'Ready', status: 'False', reason: 'SidecarStalled', message: o.stalled }
    : { type: 'Ready', status: 'True', reason: 'SidecarReady', message: 'node sidecar is posting ready status' };
  return {
    capacity: o.capacity,
    running: o.running,
    lastHeartbeatTime: now,
    sidecarVersion: o.version,
    conditions: setCondition(current?.conditions, ready, now),
  };
}

export class Heartbeat {
  private last: AgentNodeStatus | undefined;

  constructor(private readonly o: RegistrationOptions) {}

  /** Posts one heartbeat (`stalled`: why the node is not making progress); errors are logged, the next beat tries again. */
  async beat(running: number, stalled?: string): Promise<void> {
    const status = heartbeatStatus(this.last, { capacity: this.o.capacity, running, version: this.o.version, now: new Date(), ...(stalled ? { stalled } : {}) });
    try {
      const written = await this.o.api.patchStatus({ name: this.o.nodeName }, status);
      this.last = written.status;
    } catch (err) {
      this.o.logger.warn({ err: describeError(err) }, 'heartbeat failed');
    }
  }

  /** Whether the last heartbeat's view of the node still stands (for /readyz). */
  healthy(maxAgeMs: number): boolean {
    const t = this.last?.lastHeartbeatTime ? Date.parse(this.last.lastHeartbeatTime) : NaN;
    return !Number.isNaN(t) && Date.now() - t <= maxAgeMs;
  }
}
