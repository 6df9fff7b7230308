/**
 * What can be checked of the Dockerfile without a Docker engine: its stages and how they refer
 * to each other, that every file it copies is in the build context (present, and not excluded by
 * .dockerignore), that the runtime stage gets production dependencies only, and that it agrees
 * with package.json and the deploy/ manifests. (test/integration/dockerfile.test.ts runs the CLI
 * with production dependencies only.)
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { join, posix, relative } from 'node:path';
import { describe, it } from 'node:test';
import { parse as parseYaml } from 'yaml';
import { PACKAGE_ROOT } from '../../src/dev/paths.js';
import { copiesOf, dockerignoreMatcher, entrypointOf, npmInstallsOf, parseStages, runsOf, workdirOf } from '../support/dockerfile.js';

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name));
}

const read = (rel: string) => readFileSync(join(PACKAGE_ROOT, rel), 'utf8');
const stages = parseStages(read('Dockerfile'));
const pkg = JSON.parse(read('package.json')) as {
  bin: Record<string, string>;
  scripts: Record<string, string>;
  dependencies: Record<string, string>;
};
const ignored = dockerignoreMatcher(read('.dockerignore'));
const runtime = stages.at(-1)!;
const build = stages.find((s) => s.name === 'build');

describe('Dockerfile', () => {
  it('has a build stage and a runtime stage, both from node:24-slim (Node 24 LTS)', () => {
    assert.ok(build, 'a stage named "build"');
    assert.equal(runtime.name, 'runtime', 'the last stage (the default build target) is the runtime');
    for (const s of stages) assert.equal(s.base, 'node:24-slim', `stage ${s.name ?? s.index}`);
    assert.equal(new Set(stages.map((s) => s.name)).size, stages.length, 'stage names are unique');
  });

  it('copies between stages only from an earlier stage, and takes from the build stage what it compiles', () => {
    for (const s of stages) {
      for (const c of copiesOf(s).filter((c) => c.from !== undefined)) {
        const source = stages.find((o) => o.name === c.from || String(o.index) === c.from);
        assert.ok(source, `stage ${s.name}: COPY --from=${c.from} names no stage`);
        assert.ok(source.index < s.index, `stage ${s.name}: COPY --from=${c.from} must name an earlier stage`);
      }
    }
    // The compiled CLI: <build WORKDIR>/<tsconfig outDir>/src, i.e. where `npm run build` writes it.
    const tsconfig = JSON.parse(read('tsconfig.json')) as { compilerOptions: { outDir: string; rootDir: string } };
    assert.equal(tsconfig.compilerOptions.rootDir, '.', 'src/ compiles to <outDir>/src only with rootDir "."');
    const compiled = posix.join(workdirOf(build!), tsconfig.compilerOptions.outDir, 'src');
    const fromBuild = copiesOf(runtime).filter((c) => c.from === 'build');
    assert.deepEqual(
      fromBuild.flatMap((c) => c.sources),
      [compiled],
    );
    assert.ok(
      runsOf(build!).some((r) => /\bnpm run build\b/.test(r)),
      'the build stage runs `npm run build`',
    );
    assert.match(pkg.scripts.build ?? '', /\btsc\b.*tsconfig\.json/, 'npm run build compiles with tsconfig.json');
  });

  it('copies from the build context only files that exist and that .dockerignore lets through', () => {
    const sources = stages.flatMap((s) =>
      copiesOf(s)
        .filter((c) => c.from === undefined)
        .flatMap((c) => c.sources),
    );
    assert.ok(sources.length > 0);
    for (const src of sources) {
      assert.doesNotMatch(src, /[*?[]/, `${src}: globs are not checked by this test; list the files`);
      const abs = join(PACKAGE_ROOT, src);
      assert.ok(existsSync(abs), `COPY ${src}: not in the repository`);
      assert.equal(ignored(src), false, `COPY ${src}: excluded by .dockerignore`);
      if (statSync(abs).isDirectory()) {
        const included = filesUnder(abs).filter((f) => !ignored(relative(PACKAGE_ROOT, f)));
        assert.ok(included.length > 0, `COPY ${src}: every file in it is excluded by .dockerignore`);
      }
    }
    // What `npm run build` reads must have been copied into the build stage before it runs.
    const copiedToBuild = copiesOf(build!)
      .filter((c) => c.from === undefined)
      .flatMap((c) => c.sources);
    for (const needed of ['package.json', 'package-lock.json', 'tsconfig.json', 'src']) assert.ok(copiedToBuild.includes(needed), `build stage copies ${needed}`);
  });

  it('installs dev dependencies to build, production dependencies only at runtime, never running the prepare script early', () => {
    const buildInstalls = npmInstallsOf(build!);
    assert.ok(
      buildInstalls.some((c) => /^npm ci\b/.test(c) && !/--omit=dev/.test(c)),
      'the build stage runs npm ci with dev dependencies',
    );
    const runtimeInstalls = npmInstallsOf(runtime);
    assert.equal(runtimeInstalls.length, 1, 'the runtime stage installs once');
    assert.match(runtimeInstalls[0]!, /^npm ci\b/);
    assert.match(runtimeInstalls[0]!, /--omit=dev\b/);
    // package.json's `prepare` runs `npm run build` on install: tsc is a dev dependency and the
    // sources are absent, so no stage may run it on install (each stage builds explicitly).
    assert.ok(pkg.scripts.prepare, 'package.json has a prepare script (else this check is moot: revisit it)');
    for (const c of [...buildInstalls, ...runtimeInstalls]) assert.match(c, /--ignore-scripts\b/, `${c}: would run the prepare script`);
    assert.ok(!runsOf(runtime).some((r) => /\b(tsc|npm run build)\b/.test(r)), 'the runtime stage compiles nothing');
  });

  it('installs tmux, tini, procps, ca-certificates and bubblewrap in the runtime, without recommends or leftover lists', () => {
    const apt = runsOf(runtime).find((r) => /apt-get install/.test(r));
    assert.ok(apt, 'an apt-get install in the runtime stage');
    const packages = /apt-get install((?:\s+[^\s&;]+)+)/
      .exec(apt)![1]!
      .trim()
      .split(/\s+/)
      .filter((w) => !w.startsWith('-'));
    assert.deepEqual(packages.sort(), ['bubblewrap', 'ca-certificates', 'procps', 'tini', 'tmux']);
    assert.match(apt, /--no-install-recommends/);
    assert.match(apt, /rm -rf \/var\/lib\/apt\/lists/);
    assert.ok(apt.indexOf('apt-get update') < apt.indexOf('apt-get install'), 'update and install in one layer');
  });

  it('runs as uid 65532 by default, which the controller Deployment requires and the sidecar DaemonSet overrides with 0', () => {
    const users = runtime.instructions.filter((i) => i.keyword === 'USER');
    assert.equal(users.at(-1)?.args, '65532:65532', 'numeric, so runAsNonRoot can verify it');
    assert.ok(
      runsOf(runtime).some((r) => /useradd\b.*--uid 65532\b/.test(r)),
      'the user exists in /etc/passwd (a HOME, a name for tools)',
    );
    const podSecurity = (file: string) =>
      (parseYaml(read(file)) as { spec: { template: { spec: { securityContext: { runAsUser: number; runAsNonRoot?: boolean } } } } }).spec.template.spec.securityContext;
    assert.deepEqual([podSecurity('deploy/base/controller/deployment.yaml').runAsUser, podSecurity('deploy/base/controller/deployment.yaml').runAsNonRoot], [65532, true]);
    assert.equal(podSecurity('deploy/base/sidecar/daemonset.yaml').runAsUser, 0);
  });

  it('enters through tini into the package binary, by absolute path', () => {
    const argv = entrypointOf(runtime); // exec form: no shell between tini and the signals
    const script = posix.join(workdirOf(runtime), pkg.bin['agent-operator']!);
    assert.deepEqual(argv, ['tini', '--', 'node', script]);
    assert.equal(script, '/app/dist/src/cli.js');
    const compiledDest = copiesOf(runtime).find((c) => c.from === 'build')!.dest;
    assert.ok(script.startsWith(`${posix.resolve(workdirOf(runtime), compiledDest)}/`), `${script} is inside what was copied from the build stage`);
  });
});

describe('.dockerignore', () => {
  it('keeps node_modules, dist, .git, test state and logs out of the build context', () => {
    for (const path of [
      'node_modules/zod/package.json',
      'dist/src/cli.js',
      '.git/HEAD',
      '.state/cp/kubeconfig',
      'src/node_modules/x.js',
      'npm-debug.log',
      'src/dev/debug.log',
      'test/unit/dockerfile.test.ts',
      'deploy/kustomization.yaml',
    ]) {
      assert.equal(ignored(path), true, path);
    }
    for (const path of ['package.json', 'package-lock.json', 'tsconfig.json', 'src/cli.ts', 'crds/agents.orchestrator.dev.yaml']) assert.equal(ignored(path), false, path);
  });

  it('is read with Docker semantics', () => {
    const cases: [string, string, boolean][] = [
      ['*', 'a/b', true],
      ['*\n!a', 'a/b', false],
      ['*\n!a\na/*.log', 'a/x.log', true],
      ['**/x', 'x', true],
      ['**/x', 'a/b/x/y', true],
      ['a?c', 'abc', true],
      ['a?c', 'a/c', false],
      ['/dist/', 'dist/a.js', true],
      ['dist', 'src/dist', false],
      ['# dist', 'dist', false],
    ];
    for (const [patterns, path, excluded] of cases) assert.equal(dockerignoreMatcher(patterns)(path), excluded, `${JSON.stringify(patterns)} on ${path}`);
  });
});

describe('src/ (what the runtime image runs)', () => {
  it('imports only production dependencies and node builtins', () => {
    const allowed = new Set([...Object.keys(pkg.dependencies), ...builtinModules]);
    const offenders: string[] = [];
    for (const file of filesUnder(join(PACKAGE_ROOT, 'src')).filter((f) => f.endsWith('.ts'))) {
      const text = readFileSync(file, 'utf8');
      // Static imports (type-only ones are erased), re-exports and dynamic imports of bare specifiers.
      const specifiers = [...text.matchAll(/^\s*(?:import(?!\s+type\b)|export)\b[^'";]*?from\s+['"]([^'"]+)['"]|\bimport\(\s*['"]([^'"]+)['"]\s*\)/gm)].map((m) => (m[1] ?? m[2])!);
      for (const s of specifiers.filter((s) => !s.startsWith('.') && !s.startsWith('node:'))) {
        const name = s
          .split('/')
          .slice(0, s.startsWith('@') ? 2 : 1)
          .join('/');
        if (!allowed.has(name)) offenders.push(`${relative(PACKAGE_ROOT, file)}: ${s}`);
      }
    }
    assert.deepEqual(offenders, [], 'these are not in package.json "dependencies", so the runtime image lacks them');
  });
});
