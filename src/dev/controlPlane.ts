/**
 * A real local Kubernetes control plane: etcd + kube-apiserver (RBAC on, client-certificate
 * users) + kube-controller-manager (so namespace deletion and ownerReference garbage collection
 * happen), on free ports of 127.0.0.1, with everything under one state directory.
 */
import { randomBytes } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { execa } from 'execa';
import type { Logger } from 'pino';
import { ensureBinaries, type Binaries } from './binaries.js';
import { createPki, issueClientCert, pkiAt, type Pki } from './certs.js';
import { apiErrorCode } from './apiErrors.js';
import { writeKubeconfig } from './kubeconfig.js';
import { stderrLogger } from './logger.js';
import { freePorts } from './ports.js';
import { killLeftovers, startProcess, type ManagedProcess } from './processes.js';

export interface KubectlResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

export interface KubectlOptions {
  input?: string;
  timeoutMs?: number;
  /** Run as someone else than the admin (a path from userKubeconfig or serviceAccountKubeconfig). */
  kubeconfig?: string;
}

/** What a running control plane offers to its users; everything but stopping it. */
export interface ControlPlaneClient {
  readonly server: string;
  /** Admin (system:masters). */
  readonly kubeconfigPath: string;
  /** The directory holding kubectl (for PATH). */
  readonly binDir: string;
  readonly stateDir: string;
  readonly hasControllerManager: boolean;
  kubectl(args: string[], opts?: KubectlOptions): Promise<KubectlResult>;
  /** A client-certificate user (CN=user, O=groups); returns a kubeconfig path. */
  userKubeconfig(user: string, groups: string[]): Promise<string>;
  /**
   * A ServiceAccount's token from the TokenRequest API (the account is created when missing); returns
   * a kubeconfig path. Bound to an object (`kubectl create token --bound-object-kind`), the token is
   * valid only while that object exists, and a Node (or a Pod) puts the node's name and uid in the
   * user's extra info (authentication.kubernetes.io/node-name, node-uid).
   */
  serviceAccountKubeconfig(namespace: string, name: string, opts?: { expirationSeconds?: number; boundTo?: BoundObject }): Promise<string>;
}

/** What a token can be bound to (TokenRequest's boundObjectRef). */
export interface BoundObject {
  kind: 'Node' | 'Pod' | 'Secret';
  name: string;
  uid: string;
}

export interface ControlPlane extends ControlPlaneClient {
  /** Stops every process (controller manager, API server, etcd) and removes a state dir it created. */
  stop(): Promise<void>;
  /** SIGKILLs the API server (a crash) and starts it again with the same command line; resolves once it is ready. */
  crashApiServer(): Promise<void>;
}

export interface StartOptions {
  /** Kept after stop() when given; otherwise a temp dir that stop() removes. */
  stateDir?: string;
  /** Run kube-controller-manager too (default true, when the binaries include it). */
  controllerManager?: boolean;
  logger?: Logger;
  /** Upper bound for etcd + API server readiness (default 120 s; warm start takes ~10 s). */
  readyTimeoutMs?: number;
}

/** Recorded in the state dir so other processes (test files) can use a running control plane. */
interface StateFile {
  server: string;
  kubectl: string;
  hasControllerManager: boolean;
}

const STATE_FILE = 'control-plane.json';
const KUBECTL_TIMEOUT_MS = 60_000;
const START_ATTEMPTS = 3;

function layout(stateDir: string) {
  return {
    pki: join(stateDir, 'pki'),
    etcdData: join(stateDir, 'etcd-data'),
    certDir: join(stateDir, 'apiserver-certs'),
    kubeconfigs: join(stateDir, 'kubeconfigs'),
    admin: join(stateDir, 'kubeconfig'),
    controllerManager: join(stateDir, 'kubeconfigs', 'kube-controller-manager.kubeconfig'),
    kubectlCache: join(stateDir, 'kubectl-cache'),
    logs: join(stateDir, 'logs'),
    stateFile: join(stateDir, STATE_FILE),
  };
}

/** GET a URL until it answers 200 (or the process dies, or time runs out). */
async function waitHealthy(opts: { what: string; url: string; tls?: { ca: Buffer; cert: Buffer; key: Buffer }; process: ManagedProcess; deadline: number }): Promise<void> {
  let last = 'no answer yet';
  while (Date.now() < opts.deadline) {
    if (!opts.process.running()) {
      throw new Error(`${opts.what} exited during startup (log ${opts.process.logPath}):\n${opts.process.logTail()}`);
    }
    last = await probe(opts.url, opts.tls).catch((err: Error) => err.message);
    if (last === '200') return;
    await sleep(200);
  }
  throw new Error(`${opts.what} not ready at ${opts.url} in time (last: ${last}); log ${opts.process.logPath}:\n${opts.process.logTail()}`);
}

function probe(url: string, tls?: { ca: Buffer; cert: Buffer; key: Buffer }): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = (tls ? httpsRequest : httpRequest)(url, { timeout: 2000, ...(tls ?? {}) }, (res) => {
      res.resume();
      resolve(String(res.statusCode));
    });
    req.on('timeout', () => req.destroy(new Error('probe timed out')));
    req.on('error', reject);
    req.end();
  });
}

function isPortClash(err: unknown): boolean {
  return err instanceof Error && /address already in use/i.test(err.message);
}

export async function startControlPlane(opts: StartOptions = {}): Promise<ControlPlane> {
  const logger = opts.logger ?? stderrLogger('control-plane');
  const started = Date.now();
  const ownsStateDir = !opts.stateDir;
  const stateDir = opts.stateDir ?? (await mkdtemp(join(tmpdir(), 'agent-operator-cp-')));
  const paths = layout(stateDir);
  await mkdir(stateDir, { recursive: true });
  await killLeftovers(stateDir, logger);
  // Every start is a fresh cluster: old data and credentials must not leak into it.
  for (const dir of [paths.pki, paths.etcdData, paths.certDir, paths.kubeconfigs, paths.logs, paths.kubectlCache, paths.stateFile]) {
    await rm(dir, { recursive: true, force: true });
  }
  await mkdir(paths.kubeconfigs, { recursive: true, mode: 0o700 });

  const bins = await ensureBinaries({ logger });
  const withControllerManager = (opts.controllerManager ?? true) && !!bins.kubeControllerManager;
  if ((opts.controllerManager ?? true) && !bins.kubeControllerManager) {
    logger.warn('starting without kube-controller-manager: namespaces will not finish terminating and owner references are not garbage-collected');
  }
  const pki = await createPki(paths.pki);

  let processes: ManagedProcess[] = [];
  let restartApiServer: (() => Promise<ManagedProcess>) | undefined;
  const stopAll = async () => {
    // Reverse start order: clients before the servers they talk to.
    for (const p of [...processes].reverse()) await p.stop(p.name === 'kube-controller-manager' ? 5000 : 10_000);
    processes = [];
  };
  let server = '';
  try {
    for (let attempt = 1; ; attempt++) {
      try {
        server = await startProcesses({
          bins,
          pki,
          paths,
          stateDir,
          logger,
          withControllerManager,
          processes,
          readyTimeoutMs: opts.readyTimeoutMs ?? 120_000,
          onApiServer: (restart) => (restartApiServer = restart),
        });
        break;
      } catch (err) {
        await stopAll();
        if (attempt >= START_ATTEMPTS || !isPortClash(err)) throw err;
        logger.warn({ attempt }, 'a port was taken between picking and binding it; retrying with new ports');
      }
    }
  } catch (err) {
    if (ownsStateDir) await rm(stateDir, { recursive: true, force: true });
    throw err;
  }

  const state: StateFile = { server, kubectl: bins.kubectl, hasControllerManager: withControllerManager };
  await writeFile(paths.stateFile, JSON.stringify(state, null, 2));
  const client = clientFor(stateDir, state);
  logger.info({ server, stateDir, controllerManager: withControllerManager, startMs: Date.now() - started }, 'control plane ready');

  let stopping: Promise<void> | undefined;
  return {
    ...client,
    crashApiServer: async () => {
      const i = processes.findIndex((p) => p.name === 'kube-apiserver');
      const old = processes[i];
      if (!old || !restartApiServer) throw new Error('the API server is not running');
      process.kill(old.pid, 'SIGKILL');
      await old.exited;
      processes[i] = await restartApiServer();
    },
    stop: () =>
      (stopping ??= (async () => {
        await stopAll();
        // Nobody may open a stopped control plane through its state dir.
        await rm(paths.stateFile, { force: true });
        if (ownsStateDir) await rm(stateDir, { recursive: true, force: true });
        logger.info({ stateDir }, 'control plane stopped');
      })()),
  };
}

async function startProcesses(ctx: {
  bins: Binaries;
  pki: Pki;
  paths: ReturnType<typeof layout>;
  stateDir: string;
  logger: Logger;
  withControllerManager: boolean;
  processes: ManagedProcess[];
  readyTimeoutMs: number;
  /** Receives how to start the API server again, with the same command line, and wait for it. */
  onApiServer: (restart: () => Promise<ManagedProcess>) => void;
}): Promise<string> {
  const { bins, pki, paths, stateDir, logger } = ctx;
  const deadline = Date.now() + ctx.readyTimeoutMs;
  const [etcdClientPort, etcdPeerPort, apiPort] = await freePorts(3);
  const etcdUrl = `http://127.0.0.1:${etcdClientPort}`;
  const server = `https://127.0.0.1:${apiPort}`;

  const admin = await issueClientCert(pki, 'admin', ['system:masters']);
  await writeKubeconfig(paths.admin, { server, caFile: pki.ca.cert, user: 'admin', credentials: { certFile: admin.cert, keyFile: admin.key } });

  const etcd = await startProcess({
    name: 'etcd',
    command: bins.etcd,
    stateDir,
    logger,
    args: [
      `--data-dir=${paths.etcdData}`,
      `--listen-client-urls=${etcdUrl}`,
      `--advertise-client-urls=${etcdUrl}`,
      `--listen-peer-urls=http://127.0.0.1:${etcdPeerPort}`,
      `--initial-advertise-peer-urls=http://127.0.0.1:${etcdPeerPort}`,
      `--initial-cluster=default=http://127.0.0.1:${etcdPeerPort}`,
      '--unsafe-no-fsync=true',
      '--log-level=warn',
    ],
  });
  ctx.processes.push(etcd);
  await waitHealthy({ what: 'etcd', url: `${etcdUrl}/health`, process: etcd, deadline });

  const startApiServer = () =>
    startProcess({
      name: 'kube-apiserver',
      command: bins.kubeApiserver,
      stateDir,
      logger,
      args: [
        `--etcd-servers=${etcdUrl}`,
        `--cert-dir=${paths.certDir}`,
        `--tls-cert-file=${pki.apiserver.cert}`,
        `--tls-private-key-file=${pki.apiserver.key}`,
        `--secure-port=${apiPort}`,
        '--bind-address=127.0.0.1',
        // No default route on some machines: the API server cannot guess its address (controller-runtime#669).
        '--advertise-address=127.0.0.1',
        '--service-cluster-ip-range=10.0.0.0/24',
        '--allow-privileged=true',
        '--disable-admission-plugins=ServiceAccount',
        '--authorization-mode=Node,RBAC',
        `--client-ca-file=${pki.ca.cert}`,
        `--service-account-issuer=${server}`,
        `--service-account-key-file=${pki.serviceAccountPub}`,
        `--service-account-signing-key-file=${pki.serviceAccountKey}`,
        '--profiling=false',
      ],
    });
  const apiserver = await startApiServer();
  ctx.processes.push(apiserver);
  const tls = {
    ca: await readFile(pki.ca.cert),
    cert: await readFile(admin.cert),
    key: await readFile(admin.key),
  };
  await waitHealthy({ what: 'kube-apiserver', url: `${server}/readyz`, tls, process: apiserver, deadline });
  ctx.onApiServer(async () => {
    const p = await startApiServer();
    await waitHealthy({ what: 'kube-apiserver', url: `${server}/readyz`, tls, process: p, deadline: Date.now() + ctx.readyTimeoutMs });
    return p;
  });

  if (ctx.withControllerManager && bins.kubeControllerManager) {
    // Its own identity; in system:masters because with one identity for all controllers
    // (--use-service-account-credentials=false) the namespace and garbage collectors must be
    // able to delete anything, custom resources included.
    const cm = await issueClientCert(pki, 'system:kube-controller-manager', ['system:masters']);
    await writeKubeconfig(paths.controllerManager, {
      server,
      caFile: pki.ca.cert,
      user: 'system:kube-controller-manager',
      credentials: { certFile: cm.cert, keyFile: cm.key },
    });
    const controllerManager = await startProcess({
      name: 'kube-controller-manager',
      command: bins.kubeControllerManager,
      stateDir,
      logger,
      args: [
        `--kubeconfig=${paths.controllerManager}`,
        '--leader-elect=false',
        '--use-service-account-credentials=false',
        '--controllers=namespace-controller,garbage-collector-controller,serviceaccount-controller,serviceaccount-token-controller,root-ca-certificate-publisher-controller',
        `--service-account-private-key-file=${pki.serviceAccountKey}`,
        `--root-ca-file=${pki.ca.cert}`,
        // It serves nothing we use; port 0 keeps parallel control planes from clashing on 10257.
        '--secure-port=0',
      ],
    });
    ctx.processes.push(controllerManager);
    // It has no health endpoint without a port: give it a moment to fail on bad flags.
    await sleep(300);
    if (!controllerManager.running()) {
      throw new Error(`kube-controller-manager exited during startup (log ${controllerManager.logPath}):\n${controllerManager.logTail()}`);
    }
  }
  return server;
}

function clientFor(stateDir: string, state: StateFile): ControlPlaneClient {
  const paths = layout(stateDir);
  const pki = pkiAt(paths.pki);
  const kubeconfigPath = paths.admin;
  const newKubeconfigPath = (who: string) => join(paths.kubeconfigs, `${who.replace(/[^A-Za-z0-9._-]/g, '_')}-${randomBytes(4).toString('hex')}.kubeconfig`);
  return {
    server: state.server,
    kubeconfigPath,
    binDir: dirname(state.kubectl),
    stateDir,
    hasControllerManager: state.hasControllerManager,
    kubectl: async (args, o = {}) => {
      const r = await execa(state.kubectl, ['--kubeconfig', o.kubeconfig ?? kubeconfigPath, ...args], {
        timeout: o.timeoutMs ?? KUBECTL_TIMEOUT_MS,
        reject: false,
        env: { KUBECACHEDIR: paths.kubectlCache },
        ...(o.input !== undefined ? { input: o.input } : {}),
      });
      if (r.timedOut) throw new Error(`kubectl ${args.join(' ')} timed out after ${o.timeoutMs ?? KUBECTL_TIMEOUT_MS} ms`);
      return { stdout: r.stdout, stderr: r.stderr, exitCode: r.exitCode ?? 1 };
    },
    userKubeconfig: async (user, groups) => {
      const pair = await issueClientCert(pki, user, groups);
      return writeKubeconfig(newKubeconfigPath(user), {
        server: state.server,
        caFile: pki.ca.cert,
        user,
        credentials: { certFile: pair.cert, keyFile: pair.key },
      });
    },
    serviceAccountKubeconfig: async (namespace, name, o = {}) => {
      const kc = new KubeConfig();
      kc.loadFromFile(kubeconfigPath);
      const core = kc.makeApiClient(CoreV1Api);
      try {
        await core.createNamespacedServiceAccount({ namespace, body: { metadata: { name } } });
      } catch (err) {
        if (apiErrorCode(err) !== 409) throw err;
      }
      const tr = await core.createNamespacedServiceAccountToken({
        namespace,
        name,
        body: {
          spec: {
            audiences: [],
            expirationSeconds: o.expirationSeconds ?? 3600,
            ...(o.boundTo ? { boundObjectRef: { apiVersion: 'v1', kind: o.boundTo.kind, name: o.boundTo.name, uid: o.boundTo.uid } } : {}),
          },
        },
      });
      const token = tr.status?.token;
      if (!token) throw new Error(`TokenRequest for ${namespace}/${name} returned no token`);
      return writeKubeconfig(newKubeconfigPath(`sa-${namespace}-${name}${o.boundTo ? `-${o.boundTo.name}` : ''}`), {
        server: state.server,
        caFile: pki.ca.cert,
        user: `system:serviceaccount:${namespace}:${name}`,
        credentials: { token },
        namespace,
      });
    },
  };
}

/** Uses a control plane another process started (e.g. the test runner) through its state dir. */
export async function openControlPlane(stateDir: string): Promise<ControlPlaneClient> {
  const paths = layout(stateDir);
  const text = await readFile(paths.stateFile, 'utf8').catch(() => {
    throw new Error(`no running control plane recorded in ${stateDir} (${STATE_FILE} missing)`);
  });
  return clientFor(stateDir, JSON.parse(text) as StateFile);
}
