/**
 * Reading the Dockerfile and .dockerignore without a Docker engine: the subset of the syntax this
 * repository uses, strictly (anything else is an error rather than a silent misreading).
 * Used by test/unit/dockerfile.test.ts (structure), test/integration/dockerfile.test.ts (which
 * assembles the runtime stage's files as the Dockerfile says and runs the CLI from them) and
 * test/integration/image.test.ts (the built image).
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join, posix } from 'node:path';
import { PACKAGE_ROOT } from '../../src/dev/paths.js';

export interface Instruction {
  keyword: string;
  args: string;
  line: number;
}

export interface Stage {
  index: number;
  name: string | undefined;
  /** The FROM image with global ARG defaults substituted. */
  base: string;
  instructions: Instruction[];
}

export interface Copy {
  /** --from=<stage>, lower-cased; undefined for the build context. */
  from: string | undefined;
  sources: string[];
  dest: string;
}

/** Instructions with line continuations joined and comment lines dropped. */
export function parseInstructions(text: string): Instruction[] {
  const out: Instruction[] = [];
  let pending: { text: string; line: number } | undefined;
  text.split('\n').forEach((raw, i) => {
    const line = raw.trimEnd();
    if (/^\s*#/.test(line)) return; // comments, also between the lines of a continued RUN
    if (!pending && line.trim() === '') return;
    const continued = line.endsWith('\\');
    const body = continued ? line.slice(0, -1) : line;
    pending = pending ? { text: `${pending.text} ${body.trim()}`, line: pending.line } : { text: body.trim(), line: i + 1 };
    if (continued) return;
    const m = /^(\S+)\s*(.*)$/.exec(pending.text);
    if (!m) throw new Error(`Dockerfile:${pending.line}: cannot parse`);
    out.push({ keyword: m[1]!.toUpperCase(), args: m[2]!, line: pending.line });
    pending = undefined;
  });
  if (pending) throw new Error('Dockerfile ends inside a line continuation');
  return out;
}

function substitute(value: string, vars: Record<string, string>, line: number): string {
  return value.replace(/\$\{(\w+)\}|\$(\w+)/g, (_, a: string | undefined, b: string | undefined) => {
    const name = (a ?? b)!;
    const v = vars[name];
    if (v === undefined) throw new Error(`Dockerfile:${line}: \${${name}} is not a global ARG with a default`);
    return v;
  });
}

export function parseStages(text: string): Stage[] {
  const globalArgs: Record<string, string> = {};
  const stages: Stage[] = [];
  for (const ins of parseInstructions(text)) {
    if (ins.keyword === 'FROM') {
      const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(ins.args);
      if (!m) throw new Error(`Dockerfile:${ins.line}: FROM <image> [AS <name>] expected`);
      stages.push({ index: stages.length, name: m[2]?.toLowerCase(), base: substitute(m[1]!, globalArgs, ins.line), instructions: [] });
    } else if (stages.length === 0) {
      const m = /^(\w+)=(\S+)$/.exec(ins.args);
      if (ins.keyword !== 'ARG' || !m) throw new Error(`Dockerfile:${ins.line}: only ARG NAME=default may precede the first FROM`);
      globalArgs[m[1]!] = m[2]!;
    } else {
      stages.at(-1)!.instructions.push(ins);
    }
  }
  if (stages.length === 0) throw new Error('Dockerfile has no FROM');
  return stages;
}

export function parseCopy(ins: Instruction): Copy {
  let rest = ins.args;
  let from: string | undefined;
  const flag = /^--([\w-]+)(?:=(\S+))?\s+/;
  for (let m = flag.exec(rest); m; m = flag.exec(rest)) {
    if (m[1] === 'from') from = m[2]!.toLowerCase();
    else if (!['chown', 'chmod', 'link'].includes(m[1]!)) throw new Error(`Dockerfile:${ins.line}: unexpected COPY flag --${m[1]}`);
    rest = rest.slice(m[0].length);
  }
  const parts = rest.startsWith('[') ? (JSON.parse(rest) as string[]) : rest.split(/\s+/);
  if (parts.length < 2) throw new Error(`Dockerfile:${ins.line}: COPY <src>... <dest> expected`);
  return { from, sources: parts.slice(0, -1), dest: parts.at(-1)! };
}

export function copiesOf(stage: Stage): Copy[] {
  return stage.instructions.filter((i) => i.keyword === 'COPY').map(parseCopy);
}

export function runsOf(stage: Stage): string[] {
  return stage.instructions.filter((i) => i.keyword === 'RUN').map((i) => i.args);
}

/** The stage's working directory after its instructions (relative WORKDIRs accumulate). */
export function workdirOf(stage: Stage): string {
  return stage.instructions.filter((i) => i.keyword === 'WORKDIR').reduce((dir, i) => posix.resolve(dir, i.args), '/');
}

/** The exec-form ENTRYPOINT of a stage (a shell-form one would put a shell between tini and the signals). */
export function entrypointOf(stage: Stage): string[] | undefined {
  const entry = stage.instructions.filter((i) => i.keyword === 'ENTRYPOINT').at(-1);
  if (!entry) return undefined;
  if (!entry.args.startsWith('[')) throw new Error(`Dockerfile:${entry.line}: ENTRYPOINT must be in exec form (a JSON array)`);
  return JSON.parse(entry.args) as string[];
}

/** The `npm ci`/`npm install` commands of a stage (a RUN may chain several commands with &&). */
export function npmInstallsOf(stage: Stage): string[] {
  return runsOf(stage).flatMap((r) =>
    r
      .split(/&&|;/)
      .map((c) => c.trim())
      .filter((c) => /^npm (ci|install|i)\b/.test(c)),
  );
}

/**
 * A .dockerignore as Docker reads it (moby/patternmatcher): patterns are paths relative to the
 * context root; `*` and `?` stop at `/`, `**` crosses directories; a pattern matching a directory
 * excludes everything below it; `!` re-includes; the last matching pattern wins.
 * Returns whether a context-relative path is excluded.
 */
export function dockerignoreMatcher(text: string): (path: string) => boolean {
  const rules = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => {
      const negated = l.startsWith('!');
      const pattern = posix.normalize((negated ? l.slice(1) : l).trim()).replace(/^\/+|\/+$/g, '');
      let re = '';
      for (let i = 0; i < pattern.length; i++) {
        const c = pattern[i]!;
        if (c === '*' && pattern[i + 1] === '*') {
          i++;
          if (pattern[i + 1] === '/') {
            i++;
            re += '(?:.*/)?';
          } else re += '.*';
        } else if (c === '*') re += '[^/]*';
        else if (c === '?') re += '[^/]';
        else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
      }
      return { negated, re: new RegExp(`^${re}$`) };
    });
  return (path: string) => {
    const parts = posix.normalize(path).replace(/^\/+/, '').split('/');
    const selfAndParents = parts.map((_, i) => parts.slice(0, i + 1).join('/'));
    let excluded = false;
    for (const r of rules) if (selfAndParents.some((p) => r.re.test(p))) excluded = !r.negated;
    return excluded;
  };
}

/**
 * The runtime's app directory holds every production package of the lockfile and none that only
 * dev dependencies need (the lockfile marks those "dev": true).
 */
export function assertProductionDependenciesOnly(appDir: string): void {
  const lock = JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, { dev?: boolean; optional?: boolean }> };
  const entries = Object.entries(lock.packages).filter(([path]) => path.startsWith('node_modules/'));
  const devOnly = entries.filter(([, p]) => p.dev).map(([path]) => path);
  assert.ok(devOnly.includes('node_modules/typescript'), 'the lockfile marks dev-only packages (else this check is moot)');
  for (const path of devOnly) assert.ok(!existsSync(join(appDir, path)), `${path} is for development only and must not be in the runtime`);
  for (const [path, p] of entries) if (!p.dev && !p.optional) assert.ok(existsSync(join(appDir, path, 'package.json')), `${path} (production) is installed`);
}
