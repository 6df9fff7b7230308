/**
 * `npm test`: unit tests first, then ONE real control plane (etcd + kube-apiserver +
 * kube-controller-manager, CRDs installed) for all integration tests, which run one file at a
 * time against it. Everything started is stopped and every temp dir removed, also on failure and
 * on SIGINT/SIGTERM. The exit code is non-zero when any stage failed.
 *
 *   node dist/test/run.js [filter...]   e.g. `integration/crd` runs files whose path contains it
 *
 * AO_KEEP_STATE=1 keeps the run's temp dir (control-plane logs, test files) for inspection.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join, relative, sep } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { ensureBinaries } from '../src/dev/binaries.js';
import { startControlPlane, type ControlPlane } from '../src/dev/controlPlane.js';
import { installCrds } from '../src/dev/crds.js';
import { reapStacks } from '../src/dev/stack.js';
import { stderrLogger } from '../src/dev/logger.js';

const TEST_ROOT = dirname(fileURLToPath(import.meta.url)); // dist/test
/** Whole-stage bound, so a hung test cannot hold CI until its own timeout. */
const STAGE_TIMEOUT_MS = Number(process.env.AO_TEST_TIMEOUT_MS ?? 60 * 60_000);
const PER_TEST_TIMEOUT_MS = 10 * 60_000;

const logger = stderrLogger('test-run');

async function testFiles(stage: 'unit' | 'integration', filters: string[]): Promise<string[]> {
  const dir = join(TEST_ROOT, stage);
  const entries = await readdir(dir, { recursive: true }).catch(() => [] as string[]);
  const wanted = filters.map((f) => f.replace(/^(dist\/)?test\//, '').replace(/\.(test\.)?(ts|js)$/, ''));
  return entries
    .filter((e) => e.endsWith('.test.js'))
    .map((e) => join(dir, e))
    .filter((f) => {
      const rel = relative(TEST_ROOT, f).split(sep).join('/');
      return wanted.length === 0 || wanted.some((w) => rel.includes(w));
    })
    .sort();
}

let current: ChildProcess | undefined;
let interrupted: NodeJS.Signals | undefined;

function runNodeTest(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--test', `--test-timeout=${PER_TEST_TIMEOUT_MS}`, ...args], { stdio: 'inherit', env });
    current = child;
    const timer = setTimeout(() => {
      logger.error({ timeoutMs: STAGE_TIMEOUT_MS }, 'test stage timed out; stopping it');
      child.kill('SIGTERM');
      void sleep(10_000).then(() => child.exitCode === null && child.kill('SIGKILL'));
    }, STAGE_TIMEOUT_MS);
    child.once('error', reject);
    child.once('exit', (code) => {
      clearTimeout(timer);
      current = undefined;
      // No code means killed by a signal (the stage timeout): a failure.
      resolve(code ?? 1);
    });
  });
}

async function main(filters: string[]): Promise<number> {
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.on(sig, () => {
      interrupted ??= sig;
      logger.warn({ signal: sig }, 'interrupted; stopping tests and the control plane');
      current?.kill(sig);
    });
  }
  const unit = await testFiles('unit', filters);
  const integration = await testFiles('integration', filters);
  if (unit.length + integration.length === 0) {
    logger.error({ filters }, 'no test file matches');
    return 2;
  }
  // Binaries first: on a cold machine the build is the long part and should fail early.
  if (integration.length > 0) await ensureBinaries({ logger });

  // Everything of this run lives here: the control plane's state and, as TMPDIR, whatever the
  // tests create, so even a test process killed mid-test leaves nothing behind.
  const tmp = await mkdtemp(join(tmpdir(), 'agent-operator-test-'));
  // Sandboxed agents' uids pass through it to their own workspaces (node roots live under it).
  await chmod(tmp, 0o711);
  const testTmp = join(tmp, 'tmp');
  await mkdir(testTmp);
  const testEnv = { ...process.env, TMPDIR: testTmp };
  let unitCode = 0;
  let integrationCode = 0;
  let cp: ControlPlane | undefined;
  try {
    if (unit.length > 0 && !interrupted) {
      logger.info({ files: unit.length }, 'unit tests');
      unitCode = await runNodeTest(unit, testEnv);
    }
    if (integration.length > 0 && !interrupted) {
      const started = Date.now();
      cp = await startControlPlane({ stateDir: join(tmp, 'control-plane'), logger });
      const crds = await installCrds(cp.kubeconfigPath);
      logger.info({ server: cp.server, crds, startMs: Date.now() - started }, 'control plane up for the integration tests');
      if (!interrupted) {
        // fileIsolation fails a file that leaves objects behind for the next one (and removes them).
        const isolation = pathToFileURL(join(TEST_ROOT, 'support', 'fileIsolation.js')).href;
        integrationCode = await runNodeTest(['--test-concurrency=1', '--import', isolation, ...integration], {
          ...testEnv,
          KUBECONFIG: cp.kubeconfigPath,
          AO_TEST_STATE_DIR: cp.stateDir,
          AO_KUBECTL: join(cp.binDir, 'kubectl'),
          PATH: `${cp.binDir}${delimiter}${process.env.PATH ?? ''}`,
        });
      }
    }
  } finally {
    // A test process killed mid-file (an interrupted or timed-out run) never stopped its stack.
    await reapStacks(testTmp, logger).catch((err: unknown) => logger.warn({ err }, 'ending what the stacks left failed'));
    await cp?.stop();
    if (process.env.AO_KEEP_STATE === '1') logger.info({ dir: tmp }, 'kept the test state (AO_KEEP_STATE=1)');
    else await rm(tmp, { recursive: true, force: true });
  }
  if (interrupted) return interrupted === 'SIGINT' ? 130 : 143;
  const verdict = (files: string[], code: number) => (files.length === 0 ? 'none selected' : code === 0 ? 'pass' : 'FAIL');
  logger.info({ unit: verdict(unit, unitCode), integration: verdict(integration, integrationCode) }, 'tests finished');
  return unitCode || integrationCode;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    logger.error({ err }, 'test run failed');
    process.exitCode = 1;
  },
);
