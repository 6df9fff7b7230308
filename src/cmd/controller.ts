/** `agent-operator controller`: the leader-elected Agent controller with metrics and probes. */
import { pino } from 'pino';
import { AgentController } from '../controller/controller.js';
import { loadKubeConfig } from '../kube/client.js';
import { defaultIdentity, LeaderElector } from '../kube/leaderElection.js';
import { newReconcileMetrics } from '../observability/metrics.js';
import { Gauge } from 'prom-client';
import { helpText, intFlag, parseFlags, type FlagSpec } from './flags.js';
import { serve } from './serve.js';

const FLAGS: FlagSpec = {
  kubeconfig: { type: 'string', help: 'kubeconfig file (default: $KUBECONFIG, then in-cluster)' },
  'leader-elect': { type: 'boolean', default: false, help: 'elect a leader on a Lease so that only one replica reconciles' },
  'leader-election-namespace': { type: 'string', help: 'namespace of the Lease (default: $POD_NAMESPACE, else agent-operator-system)' },
  'leader-election-id': { type: 'string', default: 'agent-operator-controller', help: 'name of the Lease' },
  'metrics-bind-address': { type: 'string', default: ':8080', help: 'address of /metrics' },
  'health-probe-bind-address': { type: 'string', default: ':8081', help: 'address of /healthz and /readyz' },
  'node-lost-grace-seconds': { type: 'string', default: '300', help: 'how long a silent node keeps its Agents before they are given up (NodeLost)' },
  'heartbeat-grace-seconds': { type: 'string', default: '40', help: 'a node whose heartbeat is older than this is not ready' },
  'launch-timeout-seconds': { type: 'string', default: '300', help: 'a bound Agent whose session has not started this long after its binding ends as Error/LaunchTimeout and is cleaned up' },
  workers: { type: 'string', default: '4', help: 'concurrent reconciles' },
  'log-level': { type: 'string', default: 'info', help: 'pino log level' },
};

const USAGE = 'Usage: agent-operator controller [options]\n\nReconciles Agents: validation, scheduling onto AgentNodes, deadlines, phase and conditions, the cleanup finalizer.';

export async function runController(argv: string[]): Promise<number> {
  const flags = parseFlags(argv, FLAGS);
  if (flags.help) {
    console.log(helpText(USAGE, FLAGS));
    return 0;
  }
  const tuning = {
    workers: intFlag(flags, 'workers', 1, 64),
    nodeLostGraceMs: intFlag(flags, 'node-lost-grace-seconds', 0) * 1000,
    heartbeatGraceMs: intFlag(flags, 'heartbeat-grace-seconds', 1) * 1000,
    launchTimeoutMs: intFlag(flags, 'launch-timeout-seconds', 1, 86_400) * 1000,
  };
  // Not pino's `name`: lines about an Agent carry the Agent's name under that key.
  const logger = pino({ level: String(flags['log-level']) }).child({ service: 'controller' });
  const kc = loadKubeConfig(flags.kubeconfig as string | undefined);
  const identity = defaultIdentity();
  const metrics = newReconcileMetrics();
  const controller = new AgentController({
    kubeConfig: kc,
    logger,
    metrics,
    identity,
    ...tuning,
  });
  const leaderElect = flags['leader-elect'] === true;
  const leaderGauge = new Gauge({ name: 'leader_election_master_status', help: 'Whether this instance leads (1) or not (0)', labelNames: ['name'], registers: [metrics.registry] });
  const leaseName = String(flags['leader-election-id']);
  let elector: LeaderElector | undefined;
  return serve({
    name: 'controller',
    logger,
    kubeConfig: kc,
    metrics,
    flags,
    // A standby replica is ready: it serves probes and waits for the lease.
    readyz: { informers: () => (!leaderElect || elector?.isLeader() ? (controller.hasSynced() ? undefined : 'caches not synced') : undefined) },
    facts: { identity, leaderElect },
    onShutdown: 'draining work in hand',
    run: async (stop) => {
      if (!leaderElect) {
        leaderGauge.set({ name: leaseName }, 1);
        return controller.run(stop);
      }
      const namespace = (flags['leader-election-namespace'] as string | undefined) ?? process.env.POD_NAMESPACE ?? 'agent-operator-system';
      let running: Promise<void> | undefined;
      elector = new LeaderElector(kc, {
        namespace,
        name: leaseName,
        identity,
        logger,
        onStartedLeading: (leading) => {
          leaderGauge.set({ name: leaseName }, 1);
          running = controller.run(leading);
        },
        onStoppedLeading: () => {
          leaderGauge.set({ name: leaseName }, 0);
          if (!stop.aborted) {
            // Another replica may be leading already: stop at once, as controller-runtime does.
            logger.error('leader election lost; exiting');
            process.exit(1);
          }
        },
      });
      leaderGauge.set({ name: leaseName }, 0);
      await elector.run(stop);
      await running;
    },
  });
}
