/**
 * The image's runtime stage without a Docker engine: its files are assembled in a temp dir as the
 * Dockerfile says (context COPYs, and the build stage's output, which is what `npx tsc` put in
 * dist/), its npm install runs for real against the registry (production dependencies only, no
 * scripts), and its ENTRYPOINT + CMD runs, as does every subcommand the deploy/ workloads start.
 * This catches a production module that imports a dev dependency, or a file the image lacks.
 */
import assert from 'node:assert/strict';
import { cp, mkdtemp, rm, stat } from 'node:fs/promises';
import { existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, posix } from 'node:path';
import { test } from 'node:test';
import { execa } from 'execa';
import { PACKAGE_ROOT } from '../../src/dev/paths.js';
import { assertProductionDependenciesOnly, copiesOf, entrypointOf, npmInstallsOf, parseStages, workdirOf, type Stage } from '../support/dockerfile.js';
import { CONTROLLER, SIDECAR, baseObjects, findObject, type Workload } from '../support/deployManifests.js';

const NPM_TIMEOUT_MS = 5 * 60_000;
const RUN_TIMEOUT_MS = 30_000;

const stages = parseStages(readFileSync(join(PACKAGE_ROOT, 'Dockerfile'), 'utf8'));
const runtime = stages.at(-1)!;

/** Where a path of another stage's filesystem is on this machine: the build stage ran in a copy of the checkout. */
function hostPathOf(from: Stage, path: string): string {
  const workdir = workdirOf(from);
  assert.ok(path.startsWith(`${workdir}/`), `COPY --from=${from.name} ${path}: outside the stage's WORKDIR ${workdir}`);
  return join(PACKAGE_ROOT, posix.relative(workdir, path));
}

/** Lays out the runtime stage's WORKDIR in `root` as its COPY instructions say. */
async function assembleRuntime(root: string): Promise<void> {
  const workdir = workdirOf(runtime);
  for (const c of copiesOf(runtime)) {
    const fromStage = c.from === undefined ? undefined : stages.find((s) => s.name === c.from);
    const dest = join(root, posix.relative(workdir, posix.resolve(workdir, c.dest)));
    const intoDirectory = c.dest.endsWith('/') || c.sources.length > 1;
    for (const src of c.sources) {
      const hostSrc = fromStage ? hostPathOf(fromStage, src) : join(PACKAGE_ROOT, src);
      assert.ok(existsSync(hostSrc), `COPY ${src}: ${hostSrc} does not exist (was the build run?)`);
      // Docker copies a directory's contents, and a file into a directory destination by name.
      const target = intoDirectory && !(await stat(hostSrc)).isDirectory() ? join(dest, posix.basename(src)) : dest;
      await cp(hostSrc, target, { recursive: true });
    }
  }
}

/** The runtime stage's `ENV K=V` settings. */
function envOf(stage: Stage): Record<string, string> {
  const env: Record<string, string> = {};
  for (const ins of stage.instructions.filter((i) => i.keyword === 'ENV')) {
    for (const m of ins.args.matchAll(/(\w+)=(\S+)/g)) env[m[1]!] = m[2]!;
  }
  return env;
}

test('the runtime stage runs its entrypoint and every deployed subcommand with production dependencies only', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'agent-operator-image-'));
  t.after(() => rm(root, { recursive: true, force: true }));
  // Module resolution walks up from the script: no node_modules above the temp dir may stand in.
  for (let dir = dirname(root); dir !== dirname(dir); dir = dirname(dir)) assert.ok(!existsSync(join(dir, 'node_modules')), `${dir}/node_modules would leak into the test`);
  assert.ok(!existsSync('/node_modules'));

  await assembleRuntime(root);

  const installs = npmInstallsOf(runtime);
  assert.ok(installs.length > 0, 'the runtime stage installs dependencies');
  for (const command of installs) {
    const [bin, ...args] = command.split(/\s+/);
    const r = await execa(bin!, args, { cwd: root, timeout: NPM_TIMEOUT_MS, reject: false, env: { npm_config_audit: 'false', npm_config_fund: 'false', npm_config_update_notifier: 'false' } });
    assert.equal(r.exitCode, 0, `${command} failed:\n${r.stderr}`);
  }
  assertProductionDependenciesOnly(root);

  // ENTRYPOINT + CMD, with the image's root mapped to the temp dir. tini only forwards signals and
  // reaps, and may not be installed here, so node runs directly.
  const entry = entrypointOf(runtime)!;
  assert.deepEqual(entry.slice(0, 2), ['tini', '--']);
  const workdir = workdirOf(runtime);
  const argv = entry.slice(2).map((a) => (a.startsWith(`${workdir}/`) ? join(root, posix.relative(workdir, a)) : a));
  const cmd = runtime.instructions.filter((i) => i.keyword === 'CMD').at(-1);
  const defaultArgs = cmd ? (JSON.parse(cmd.args) as string[]) : [];
  const env = { ...envOf(runtime), PATH: process.env.PATH ?? '' };
  const run = (args: string[]) => execa(argv[0]!, [...argv.slice(1), ...args], { cwd: '/', env, extendEnv: false, timeout: RUN_TIMEOUT_MS, reject: false });

  const usage = await run(defaultArgs);
  assert.equal(usage.exitCode, 0, `${[...entry, ...defaultArgs].join(' ')} failed:\n${usage.stderr}`);
  assert.match(usage.stdout, /Usage: agent-operator/);

  const objects = baseObjects();
  for (const w of [CONTROLLER, SIDECAR]) {
    const subcommand = findObject<Workload>(objects, w.kind, w.name).spec.template.spec.containers[0]!.args![0]!;
    assert.match(usage.stdout, new RegExp(`^\\s+${subcommand}\\s`, 'm'), `the CLI lists '${subcommand}', which the ${w.kind} runs`);
    const help = await run([subcommand, '--help']);
    assert.equal(help.exitCode, 0, `agent-operator ${subcommand} --help failed:\n${help.stderr}`);
  }
});
