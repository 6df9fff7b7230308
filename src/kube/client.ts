/**
 * Loading the kubeconfig, one shared connection pool per API server, and per-call options
 * (timeout, patch content type) for client-node's generated API clients.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import type { Agent } from 'node:http';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { KubeConfig, Observable, setHeaderOptions, type Cluster, type ConfigurationOptions, type RequestContext, type ResponseContext } from '@kubernetes/client-node';

/** Every API call gets a deadline; a hung connection must not hang a reconcile forever. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;

/** Idle pooled connections are closed after this long (active ones, such as watches, are not affected). */
const IDLE_SOCKET_TIMEOUT_MS = 30_000;

/**
 * Explicit path, else $KUBECONFIG (client-node's rules: a path list, merged), else in-cluster
 * (service account), else ~/.kube/config as kubectl does. Connections are pooled (see shareConnections).
 */
export function loadKubeConfig(path?: string): KubeConfig {
  const kc = new KubeConfig();
  const home = join(homedir(), '.kube', 'config');
  if (path) kc.loadFromFile(path);
  else if (process.env.KUBECONFIG) kc.loadFromDefault();
  else if (process.env.KUBERNETES_SERVICE_HOST) kc.loadFromCluster();
  else if (existsSync(home)) kc.loadFromFile(home);
  else throw new Error('no kubeconfig: pass --kubeconfig, set KUBECONFIG, or run in a cluster');
  if (!kc.getCurrentCluster()) throw new Error(`kubeconfig ${path ?? process.env.KUBECONFIG ?? home}: no current cluster`);
  return shareConnections(kc);
}

type AgentFactory = (cluster: Cluster | null, options: Record<string, unknown>) => Agent;
const SHARED = Symbol.for('agent-operator.sharedAgent');

/**
 * client-node 1.4 builds a new https.Agent for every request and every watch (kubernetes-client/javascript
 * #2893): no connection reuse (a TLS handshake per call) and, on watch reconnects, sockets that outlive
 * their agent. This makes every request of this KubeConfig share one keep-alive agent per server and
 * credentials; idle pooled sockets close after IDLE_SOCKET_TIMEOUT_MS. When the credentials change
 * (a rotated client certificate) a new agent is made and the old one's idle sockets time out.
 *
 * It replaces the private `createAgent` on this instance; a test pins that behaviour so an upgrade that
 * changes it fails loudly.
 */
export function shareConnections(kc: KubeConfig): KubeConfig {
  const target = kc as unknown as { createAgent: AgentFactory; [SHARED]?: Map<string, { fp: string; agent: Agent }> };
  if (target[SHARED]) return kc;
  const original = target.createAgent.bind(kc);
  const agents = new Map<string, { fp: string; agent: Agent }>();
  target[SHARED] = agents;
  target.createAgent = (cluster, options) => {
    const server = cluster?.server ?? '';
    const fp = agentFingerprint(cluster, options);
    const hit = agents.get(server);
    if (hit?.fp === fp) return hit.agent;
    const agent = original(cluster, { ...options, keepAlive: true, timeout: IDLE_SOCKET_TIMEOUT_MS });
    agents.set(server, { fp, agent });
    return agent;
  };
  return kc;
}

/** The agents shareConnections made for this KubeConfig (for tests and diagnostics). */
export function sharedAgents(kc: KubeConfig): Agent[] {
  const map = (kc as unknown as { [SHARED]?: Map<string, { agent: Agent }> })[SHARED];
  return map ? [...map.values()].map((e) => e.agent) : [];
}

/** Closes pooled connections, so a process (or a test) can exit promptly. */
export function closeConnections(kc: KubeConfig): void {
  for (const agent of sharedAgents(kc)) agent.destroy();
}

function agentFingerprint(cluster: Cluster | null, o: Record<string, unknown>): string {
  const h = createHash('sha256');
  const parts: unknown[] = [cluster?.proxyUrl, cluster?.skipTLSVerify, o.rejectUnauthorized, o.servername, o.passphrase];
  h.update(JSON.stringify(parts));
  for (const k of ['ca', 'cert', 'key', 'pfx'] as const) {
    const v = o[k];
    h.update(`|${k}:`);
    for (const item of Array.isArray(v) ? v : v === undefined || v === null ? [] : [v]) {
      h.update(typeof item === 'string' || Buffer.isBuffer(item) ? item : JSON.stringify(item));
    }
  }
  return h.digest('hex');
}

/** A valid AbortSignal.timeout argument (a positive integer), defaulting to DEFAULT_REQUEST_TIMEOUT_MS. */
export function deadlineMs(ms: number | undefined): number {
  return Math.max(1, Math.ceil(ms ?? DEFAULT_REQUEST_TIMEOUT_MS));
}

export interface CallOptions {
  /** Abort the call after this long. Default DEFAULT_REQUEST_TIMEOUT_MS. */
  timeoutMs?: number;
  /** Content-Type of the body, e.g. PatchStrategy.MergePatch (PATCH defaults to JSON Patch). */
  contentType?: string;
}

/** Options argument for a generated API call: a deadline, and optionally a Content-Type. */
export function callOptions(o: CallOptions = {}): ConfigurationOptions {
  const timeoutMs = deadlineMs(o.timeoutMs);
  const deadline: ConfigurationOptions = {
    middleware: [
      {
        pre: (ctx: RequestContext) => {
          ctx.setSignal(AbortSignal.timeout(timeoutMs));
          return new Observable(Promise.resolve(ctx));
        },
        post: (rsp: ResponseContext) => new Observable(Promise.resolve(rsp)),
      },
    ],
    middlewareMergeStrategy: 'append',
  };
  return o.contentType ? setHeaderOptions('Content-Type', o.contentType, deadline) : deadline;
}
