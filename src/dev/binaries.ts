/**
 * Finds the control-plane binaries (etcd, kube-apiserver, kube-controller-manager, kubectl), and
 * builds them into a per-version cache from the pinned wrapper modules in hack/k8s when nothing
 * else provides them. Honours the envtest conventions so setup-envtest users need no Go.
 */
import { accessSync, constants as fsConstants, existsSync, readFileSync, statSync } from 'node:fs';
import { mkdir, readFile, rename, rm, unlink, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa } from 'execa';
import type { Logger } from 'pino';
import { HACK_K8S_DIR } from './paths.js';

export const BINARY_NAMES = ['etcd', 'kube-apiserver', 'kube-controller-manager', 'kubectl'] as const;
export type BinaryName = (typeof BINARY_NAMES)[number];
/** The control plane can run without a controller manager (envtest ships none); not without these. */
export const REQUIRED_BINARIES: readonly BinaryName[] = ['etcd', 'kube-apiserver', 'kubectl'];

const ENV_VAR_OF: Record<BinaryName, string> = {
  etcd: 'TEST_ASSET_ETCD',
  'kube-apiserver': 'TEST_ASSET_KUBE_APISERVER',
  'kube-controller-manager': 'TEST_ASSET_KUBE_CONTROLLER_MANAGER',
  kubectl: 'TEST_ASSET_KUBECTL',
};

export interface Binaries {
  etcd: string;
  kubeApiserver: string;
  kubectl: string;
  /** Absent when the binaries come from a source without it (e.g. setup-envtest). */
  kubeControllerManager?: string;
  /** Where each binary came from, for logs and errors. */
  sources: Partial<Record<BinaryName, string>>;
}

export interface Versions {
  kubernetes: string;
  etcd: string;
}

/** Versions pinned by the wrapper modules' go.mod files (the one place they are written). */
export function readVersions(hackDir = HACK_K8S_DIR): Versions {
  return {
    kubernetes: requiredVersion(join(hackDir, 'kubernetes', 'go.mod'), 'k8s.io/kubernetes'),
    etcd: requiredVersion(join(hackDir, 'etcd', 'go.mod'), 'go.etcd.io/etcd/server/v3'),
  };
}

export function requiredVersion(goModPath: string, module: string): string {
  const text = readFileSync(goModPath, 'utf8');
  const escaped = module.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  const m = new RegExp(`^\\s*(?:require\\s+)?${escaped}\\s+(v[0-9][^\\s]*)`, 'm').exec(text);
  if (!m?.[1]) throw new Error(`${goModPath} does not require ${module}`);
  return m[1];
}

/** `${XDG_CACHE_HOME:-~/.cache}/agent-operator`: where everything built from hack/ is kept. */
export function cacheRoot(env: NodeJS.ProcessEnv = process.env): string {
  return join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'agent-operator');
}

export function cacheDirFor(versions: Versions, env: NodeJS.ProcessEnv = process.env): string {
  return join(cacheRoot(env), 'k8s', `${versions.kubernetes}-etcd${versions.etcd.replace(/^v/, '')}`);
}

function isExecutableFile(path: string): boolean {
  try {
    accessSync(path, fsConstants.X_OK);
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/**
 * Binaries the environment points at, per name: first the KUBEBUILDER_ASSETS directory, then the
 * individual TEST_ASSET_* variables. Pure apart from the file checks passed in.
 */
export function fromEnvironment(env: NodeJS.ProcessEnv, isExecutable: (path: string) => boolean = isExecutableFile): Partial<Record<BinaryName, { path: string; source: string }>> {
  const found: Partial<Record<BinaryName, { path: string; source: string }>> = {};
  for (const name of BINARY_NAMES) {
    const inAssets = env.KUBEBUILDER_ASSETS ? join(env.KUBEBUILDER_ASSETS, name) : undefined;
    const individual = env[ENV_VAR_OF[name]];
    if (inAssets && isExecutable(inAssets)) found[name] = { path: inAssets, source: 'KUBEBUILDER_ASSETS' };
    else if (individual && isExecutable(individual)) found[name] = { path: individual, source: ENV_VAR_OF[name] };
  }
  return found;
}

function cacheComplete(dir: string): boolean {
  return BINARY_NAMES.every((n) => isExecutableFile(join(dir, n)));
}

export interface EnsureOptions {
  logger: Logger;
  /** Human-readable progress of a first-run build (what is built, each binary, elapsed time), for a terminal. */
  progress?: (line: string) => void;
  env?: NodeJS.ProcessEnv;
  /** Upper bound for the whole build (the cold build, module downloads included, took 10.5 min on 2 cores). */
  buildTimeoutMs?: number;
}

const DEFAULT_BUILD_TIMEOUT_MS = 75 * 60_000;

/**
 * Resolves all binaries: from the environment when it provides the required ones, otherwise from
 * the cache (built on first use), keeping whatever the environment did provide.
 */
export async function ensureBinaries(opts: EnsureOptions): Promise<Binaries> {
  const env = opts.env ?? process.env;
  const found = fromEnvironment(env);
  if (!REQUIRED_BINARIES.every((n) => found[n])) {
    const dir = await ensureCache(opts);
    for (const name of BINARY_NAMES) found[name] ??= { path: join(dir, name), source: dir };
  }
  const path = (n: BinaryName) => found[n]?.path;
  const sources: Partial<Record<BinaryName, string>> = {};
  for (const n of BINARY_NAMES) if (found[n]) sources[n] = found[n].source;
  return {
    etcd: path('etcd')!,
    kubeApiserver: path('kube-apiserver')!,
    kubectl: path('kubectl')!,
    ...(found['kube-controller-manager'] ? { kubeControllerManager: found['kube-controller-manager'].path } : {}),
    sources,
  };
}

/** The cache directory with all four binaries, built from hack/k8s when missing. */
export async function ensureCache(opts: EnsureOptions): Promise<string> {
  const versions = readVersions();
  const dir = cacheDirFor(versions, opts.env ?? process.env);
  if (cacheComplete(dir)) return dir;
  const timeoutMs = opts.buildTimeoutMs ?? DEFAULT_BUILD_TIMEOUT_MS;
  const deadline = Date.now() + timeoutMs;
  const lock = await acquireLock(`${dir}.lock`, { deadline, done: () => cacheComplete(dir), logger: opts.logger, progress: opts.progress });
  if (!lock) return dir; // someone else built it while we waited
  try {
    if (cacheComplete(dir)) return dir;
    await build(dir, versions, deadline, opts.logger, opts.progress ?? (() => undefined));
    return dir;
  } finally {
    await lock.release();
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * An exclusive lock file holding the builder's pid. A lock whose process is gone is stale and
 * taken over. Returns undefined when `done()` becomes true while waiting.
 */
export async function acquireLock(
  path: string,
  {
    deadline,
    done,
    logger,
    progress,
    pollMs = 2000,
    what = 'the control-plane binaries',
  }: { deadline: number; done: () => boolean; logger: Logger; progress?: (line: string) => void; pollMs?: number; what?: string },
): Promise<{ release: () => Promise<void> } | undefined> {
  await mkdir(dirname(path), { recursive: true });
  let waitingLogged = false;
  for (;;) {
    try {
      await writeFile(path, String(process.pid), { flag: 'wx' });
      return {
        release: async () => {
          const holder = await readFile(path, 'utf8').catch(() => '');
          if (holder === String(process.pid)) await unlink(path).catch(() => undefined);
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const holder = Number.parseInt(await readFile(path, 'utf8').catch(() => ''), 10);
    if (!Number.isInteger(holder) || !processAlive(holder)) {
      // Stale: its builder died. Re-read just before removing so a fresh lock is rarely broken.
      const again = await readFile(path, 'utf8').catch(() => '');
      if (again === '' || Number.parseInt(again, 10) === holder || Number.isNaN(holder)) await unlink(path).catch(() => undefined);
      continue;
    }
    if (done()) return undefined;
    if (Date.now() > deadline) throw new Error(`timed out waiting for process ${holder} to finish building ${what} (lock ${path})`);
    if (!waitingLogged) {
      logger.info({ lock: path, holder }, `another process is building ${what}; waiting for it`);
      progress?.(`another process (pid ${holder}) is building ${what}; waiting for it to finish (this happens once per version)`);
      waitingLogged = true;
    }
    await sleep(pollMs);
  }
}

const NO_GO_MESSAGE = (dir: string) =>
  [
    'The control-plane binaries (etcd, kube-apiserver, kube-controller-manager, kubectl) are not available and cannot be built: Go is not installed.',
    'Either install Go (https://go.dev/dl/, >= the version in hack/k8s/*/go.mod) so they are built once into',
    `  ${dir}`,
    'or point KUBEBUILDER_ASSETS at a directory of setup-envtest binaries (etcd, kube-apiserver, kubectl), e.g.',
    '  export KUBEBUILDER_ASSETS="$(setup-envtest use -p path 1.35.x)"',
  ].join('\n');

/** The Go toolchain's version; `noGo` is the error when Go is not installed. */
export async function goVersion(noGo: string): Promise<string> {
  const r = await execa('go', ['env', 'GOVERSION'], { timeout: 60_000, reject: false });
  if (r.failed) {
    if ((r as { code?: string }).code === 'ENOENT') throw new Error(noGo);
    throw new Error(`'go env GOVERSION' failed: ${r.stderr || r.message}`);
  }
  return r.stdout.trim();
}

/** One `go build` in a wrapper module under hack/, bounded by `deadline`, its output's tail in the error. */
export async function goBuild(step: { what: string; cwd: string; args: string[] }, deadline: number, logger: Logger): Promise<void> {
  const started = Date.now();
  logger.info({ cwd: step.cwd }, `go build ${step.what}`);
  const r = await execa('go', step.args, {
    cwd: step.cwd,
    // GOWORK=off: a go.work in some parent directory must not pull the wrapper modules into it.
    env: { CGO_ENABLED: '0', GOWORK: 'off' },
    timeout: Math.max(1000, deadline - Date.now()),
    reject: false,
    all: true,
  });
  if (r.failed) {
    const tail = (r.all ?? '').split('\n').slice(-40).join('\n');
    throw new Error(`building ${step.what} failed (${r.timedOut ? 'timed out' : `exit ${r.exitCode}`}):\n${tail}`);
  }
  logger.info({ seconds: Math.round((Date.now() - started) / 1000) }, `built ${step.what}`);
}

/** One `go build` per binary, so progress can name each as it starts and finishes (the shared packages compile once, in Go's build cache). */
export function buildSteps(versions: Versions, hackDir: string, outDir: string): { name: BinaryName; what: string; cwd: string; args: string[] }[] {
  const [major, minor] = versions.kubernetes.replace(/^v/, '').split('.');
  const stamp = [
    `-X k8s.io/component-base/version.gitVersion=${versions.kubernetes}`,
    `-X k8s.io/component-base/version.gitMajor=${major}`,
    `-X k8s.io/component-base/version.gitMinor=${minor}`,
    `-X k8s.io/client-go/pkg/version.gitVersion=${versions.kubernetes}`,
    '-X k8s.io/component-base/version.gitTreeState=clean',
  ].join(' ');
  const kube = (name: BinaryName) => ({
    name,
    what: `${name} ${versions.kubernetes}`,
    cwd: join(hackDir, 'kubernetes'),
    args: ['build', '-trimpath', '-ldflags', `-s -w ${stamp}`, '-o', join(outDir, name), `k8s.io/kubernetes/cmd/${name}`],
  });
  return [
    { name: 'etcd', what: `etcd ${versions.etcd}`, cwd: join(hackDir, 'etcd'), args: ['build', '-trimpath', '-o', join(outDir, 'etcd'), 'go.etcd.io/etcd/server/v3'] },
    kube('kube-apiserver'),
    kube('kube-controller-manager'),
    kube('kubectl'),
  ];
}

/** Minutes and seconds, the way a person reads an elapsed build time. */
export function formatElapsed(ms: number): string {
  const s = Math.round(ms / 1000);
  return s < 60 ? `${s}s` : `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
}

/** How often a first-run build says it is still going. */
const PROGRESS_TICK_MS = 30_000;

async function build(dir: string, versions: Versions, deadline: number, logger: Logger, progress: (line: string) => void): Promise<void> {
  const go = await goVersion(NO_GO_MESSAGE(dir));
  const tmp = `${dir}.tmp-${process.pid}`;
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { recursive: true });
  const started = Date.now();
  const steps = buildSteps(versions, HACK_K8S_DIR, tmp);
  let current = steps[0]!;
  let stepStarted = started;
  const heartbeat = setInterval(() => {
    logger.info({ minutes: Math.round((Date.now() - started) / 60_000) }, 'still building the control-plane binaries');
    progress(`  still building ${current.name}: ${formatElapsed(Date.now() - stepStarted)} on it, ${formatElapsed(Date.now() - started)} in all`);
  }, PROGRESS_TICK_MS);
  try {
    logger.info({ dir, go }, 'building the control-plane binaries from hack/k8s (once per version; about 10-12 min cold on 2 cores)');
    progress(
      `First run: building the control-plane binaries (${BINARY_NAMES.join(', ')}; Kubernetes ${versions.kubernetes}, etcd ${versions.etcd}) with ${go} into ${dir}.\n` +
        'This happens once per version and takes about 10-12 minutes on 2 cores; later runs start in seconds.',
    );
    for (const [i, step] of steps.entries()) {
      current = step;
      stepStarted = Date.now();
      progress(`[${i + 1}/${steps.length}] building ${step.what}...`);
      await goBuild(step, deadline, logger);
      progress(`[${i + 1}/${steps.length}] built ${step.name} in ${formatElapsed(Date.now() - stepStarted)} (${formatElapsed(Date.now() - started)} so far)`);
    }
    for (const name of BINARY_NAMES) {
      if (!existsSync(join(tmp, name))) throw new Error(`go build did not produce ${name} in ${tmp}`);
    }
    // Atomic publish: readers see either no directory or a complete one. An incomplete leftover
    // (filled by hand, say) would make rename fail, so it goes first.
    await rm(dir, { recursive: true, force: true });
    await rename(tmp, dir);
    logger.info({ dir, seconds: Math.round((Date.now() - started) / 1000) }, 'control-plane binaries ready');
    progress(`control-plane binaries ready in ${formatElapsed(Date.now() - started)}`);
  } finally {
    clearInterval(heartbeat);
    await rm(tmp, { recursive: true, force: true });
  }
}
