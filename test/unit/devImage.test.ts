/** The decisions behind `npm run image` and the OCI spec the image test runs the controller with. */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import type { V1Container } from '@kubernetes/client-node';
import { BUILD_CA_PATH, BUILD_NPMRC_PATH, HOST_CA_BUNDLE, baseKey, budArgs, buildNpmrc, debianMirror, type BaseInputs } from '../../src/dev/image.js';
import { PACKAGE_ROOT } from '../../src/dev/paths.js';
import { missingTool, requireTool } from '../../src/dev/tools.js';
import { DEFAULT_CAPABILITIES, capabilitiesAfter, imageUser, ociSpec, parseBytes, seccompForContainer } from '../../src/dev/ociSpec.js';

test('debianMirror: the suite itself, from one-line and deb822 sources, in apt order', () => {
  const cases: { name: string; files: { path: string; text: string }[]; want: string | RegExp }[] = [
    {
      name: 'deb822, suite among several, -updates and -security ignored',
      files: [
        {
          path: '/etc/apt/sources.list.d/debian.sources',
          text: 'Types: deb\n# a comment\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\nComponents: main\n\nTypes: deb deb-src\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\nComponents: main\n',
        },
      ],
      want: 'http://mirror.example/debian',
    },
    {
      name: 'one-line with options',
      files: [{ path: '/etc/apt/sources.list', text: '# deb http://old bookworm main\ndeb [arch=amd64 signed-by=/k.gpg] http://ftp.de.debian.org/debian bookworm main\n' }],
      want: 'http://ftp.de.debian.org/debian',
    },
    { name: 'deb-src only does not count', files: [{ path: '/etc/apt/sources.list', text: 'deb-src http://x/debian bookworm main\n' }], want: /no apt source for Debian bookworm/ },
    {
      name: 'a disabled stanza is skipped',
      files: [{ path: '/a.sources', text: 'Enabled: no\nTypes: deb\nURIs: http://off/debian\nSuites: bookworm\n\nTypes: deb\nURIs: http://on/debian\nSuites: bookworm\n' }],
      want: 'http://on/debian',
    },
    {
      name: 'first file wins',
      files: [
        { path: '/etc/apt/sources.list', text: 'deb http://first/debian bookworm main\n' },
        { path: '/b.list', text: 'deb http://second/debian bookworm main\n' },
      ],
      want: 'http://first/debian',
    },
    { name: 'another suite only', files: [{ path: '/etc/apt/sources.list', text: 'deb http://x/debian trixie main\n' }], want: /in \/etc\/apt\/sources.list/ },
    { name: 'no files', files: [], want: /none found/ },
  ];
  for (const c of cases) {
    if (typeof c.want === 'string') assert.equal(debianMirror(c.files, 'bookworm'), c.want, c.name);
    else assert.throws(() => debianMirror(c.files, 'bookworm'), c.want, c.name);
  }
});

test('baseKey names every input: any change is another base', () => {
  const inputs: BaseInputs = { suite: 'bookworm', variant: 'minbase', mirror: 'http://deb.debian.org/debian', node: '24.22.3', npm: '11.21.3' };
  const key = baseKey(inputs);
  assert.match(key, /^bookworm-node24\.22\.3-npm11\.21\.3-[0-9a-f]{12}$/);
  assert.match(key, /^[\w][\w.-]{0,127}$/, 'a valid image tag');
  assert.equal(baseKey({ ...inputs }), key, 'stable');
  for (const change of [{ mirror: 'http://other/debian' }, { node: '24.22.4' }, { npm: '11.21.4' }, { suite: 'trixie' }, { variant: 'buildd' }]) {
    assert.notEqual(baseKey({ ...inputs, ...change }), key, JSON.stringify(change));
  }
});

test('budArgs: chroot isolation, layer cache, the base as NODE_IMAGE, host CA and npmrc read-only at neutral paths', () => {
  const args = budArgs({ base: 'localhost/b:k', tag: 'localhost/agent-operator:dev', context: '/repo', npmrc: '/tmp/x/npmrc' });
  const joined = args.join(' ');
  assert.equal(args[0], 'bud');
  assert.match(joined, /--isolation chroot/);
  assert.match(joined, /--layers/);
  assert.match(joined, /--build-arg NODE_IMAGE=localhost\/b:k/);
  assert.match(joined, /--file \/repo\/Dockerfile/);
  assert.equal(args.at(-1), '/repo');
  const volumes = args.flatMap((a, i) => (args[i - 1] === '--volume' ? [a] : []));
  assert.deepEqual(volumes, [`${HOST_CA_BUNDLE}:${BUILD_CA_PATH}:ro`, `/tmp/x/npmrc:${BUILD_NPMRC_PATH}:ro`]);
  for (const v of volumes) assert.ok(!v.split(':')[1]!.startsWith('/etc/ssl'), 'never over the image certificate store');
  assert.equal(buildNpmrc(), `cafile=${BUILD_CA_PATH}\n`);
  assert.ok(!budArgs({ base: 'b', tag: 't', context: '/r' }).includes('--volume'), 'no npmrc, no mounts');
});

test('a missing tool is named with its package', () => {
  assert.match(missingTool('buildah').message, /^buildah is not installed \(Debian package 'buildah'.*docker build \./);
  assert.match(missingTool('debootstrap').message, /^debootstrap is not installed.*apt-get install buildah debootstrap/);
  assert.equal(missingTool('runc').message, "runc is not installed (Debian package 'runc': apt-get install runc).");
  assert.throws(() => requireTool('no-such-tool-here'), /no-such-tool-here is not installed/);
  assert.doesNotThrow(() => requireTool('node'));
});

test('ociSpec quantities, users and capabilities', () => {
  assert.equal(parseBytes('64Mi'), 64 * 2 ** 20);
  assert.equal(parseBytes('1G'), 1e9);
  assert.equal(parseBytes('512'), 512);
  assert.throws(() => parseBytes('lots'), /not a byte quantity/);
  assert.deepEqual(imageUser('65532:65532'), { uid: 65532, gid: 65532 });
  assert.deepEqual(imageUser('1000'), { uid: 1000, gid: undefined });
  assert.deepEqual(imageUser(undefined), { uid: 0, gid: undefined });
  assert.throws(() => imageUser('nonroot'), /not numeric/);
  assert.deepEqual(capabilitiesAfter(['ALL']), []);
  assert.deepEqual(capabilitiesAfter(['all'], ['NET_BIND_SERVICE']), ['CAP_NET_BIND_SERVICE']);
  assert.deepEqual(
    capabilitiesAfter(['KILL']),
    DEFAULT_CAPABILITIES.filter((c) => c !== 'CAP_KILL'),
  );
  assert.deepEqual(capabilitiesAfter(), DEFAULT_CAPABILITIES);
});

const image = { User: '65532:65532', Env: ['PATH=/usr/bin', 'NODE_ENV=production'], Entrypoint: ['tini', '--', 'node', '/app/cli.js'], Cmd: ['--help'], WorkingDir: '/app' };

test('ociSpec: the Deployment securityContext as the kernel settings runc applies', () => {
  const container: V1Container = {
    name: 'controller',
    args: ['controller', '--leader-elect'],
    env: [
      { name: 'POD_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
      { name: 'NODE_ENV', value: 'test' },
    ],
    securityContext: { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } },
    volumeMounts: [{ name: 'tmp', mountPath: '/tmp' }],
  };
  const { spec, notApplied } = ociSpec({
    image,
    rootfs: '/r',
    hostname: 'h',
    pod: { runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, seccompProfile: { type: 'RuntimeDefault' } },
    container,
    volumes: [{ name: 'tmp', emptyDir: { sizeLimit: '64Mi' } }],
    resolvedEnv: { POD_NAMESPACE: 'ns' },
    mounts: [{ source: '/host/kc', destination: '/etc/kc', readOnly: true }],
  });
  assert.deepEqual(spec.process.user, { uid: 65532, gid: 65532 });
  assert.deepEqual(spec.process.args, ['tini', '--', 'node', '/app/cli.js', 'controller', '--leader-elect'], 'args replace CMD, ENTRYPOINT stays');
  assert.deepEqual(spec.process.env, ['PATH=/usr/bin', 'NODE_ENV=test', 'POD_NAMESPACE=ns']);
  assert.equal(spec.process.cwd, '/app');
  assert.equal(spec.process.noNewPrivileges, true);
  for (const set of Object.values(spec.process.capabilities)) assert.deepEqual(set, []);
  assert.deepEqual(spec.root, { path: '/r', readonly: true });
  assert.ok(!spec.linux.namespaces.some((n) => n.type === 'network'), 'host network');
  assert.ok(spec.linux.namespaces.some((n) => n.type === 'pid'));
  assert.deepEqual(
    spec.mounts.find((m) => m.destination === '/tmp'),
    { destination: '/tmp', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'mode=1777', `size=${64 * 2 ** 20}`] },
  );
  assert.deepEqual(spec.mounts.find((m) => m.destination === '/etc/kc')?.options, ['rbind', 'nosuid', 'nodev', 'ro']);
  assert.deepEqual(notApplied, ['pod securityContext.seccompProfile: {"type":"RuntimeDefault"}']);
});

test('ociSpec: defaults and refusals as the kubelet has them', () => {
  const plain = ociSpec({ image, rootfs: '/r', hostname: 'h', container: { name: 'c' } }).spec;
  assert.deepEqual(plain.process.args, ['tini', '--', 'node', '/app/cli.js', '--help'], 'ENTRYPOINT + CMD');
  assert.deepEqual(plain.process.user, { uid: 65532, gid: 65532 }, "the image's USER");
  assert.equal(plain.process.noNewPrivileges, false, 'only allowPrivilegeEscalation: false sets no_new_privs');
  assert.equal(plain.root.readonly, false);
  assert.deepEqual(plain.process.capabilities.bounding, DEFAULT_CAPABILITIES);
  assert.deepEqual(
    ociSpec({ image, rootfs: '/r', hostname: 'h', container: { name: 'c', command: ['sh'], args: ['-c', 'id'] } }).spec.process.args,
    ['sh', '-c', 'id'],
    'command replaces ENTRYPOINT and CMD',
  );

  const cases: { name: string; input: Partial<Parameters<typeof ociSpec>[0]>; error: RegExp }[] = [
    { name: 'runAsNonRoot with root', input: { image: { ...image, User: '0' }, pod: { runAsNonRoot: true } }, error: /runAsNonRoot is set but the container would run as uid 0/ },
    { name: 'unresolved valueFrom', input: { container: { name: 'c', env: [{ name: 'X', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } }] } }, error: /env X: valueFrom must be resolved/ },
    {
      name: 'hostPath without a place',
      input: { container: { name: 'c', volumeMounts: [{ name: 'v', mountPath: '/v' }] }, volumes: [{ name: 'v', hostPath: { path: '/x' } }] },
      error: /hostPath \/x has no place on this machine/,
    },
    {
      name: 'other volume',
      input: { container: { name: 'c', volumeMounts: [{ name: 'v', mountPath: '/v' }] }, volumes: [{ name: 'v', configMap: { name: 'x' } }] },
      error: /only emptyDir and hostPath/,
    },
    { name: 'hostUsers false without host ids', input: { hostUsers: false }, error: /needs the host ids/ },
    { name: 'Unmasked /proc without a user namespace', input: { container: { name: 'c', securityContext: { procMount: 'Unmasked' } } }, error: /procMount: Unmasked needs hostUsers: false/ },
    { name: 'Localhost seccomp without a root', input: { pod: { seccompProfile: { type: 'Localhost', localhostProfile: 'p.json' } } }, error: /no seccomp root given/ },
    {
      name: 'Localhost seccomp outside the root',
      input: { seccompRoot: '/s', pod: { seccompProfile: { type: 'Localhost', localhostProfile: '../etc/p.json' } } },
      error: /must be a relative path under/,
    },
    { name: 'missing volume', input: { container: { name: 'c', volumeMounts: [{ name: 'v', mountPath: '/v' }] } }, error: /no such volume/ },
    { name: 'privileged', input: { container: { name: 'c', securityContext: { privileged: true } } }, error: /privileged containers are not supported/ },
    { name: 'nothing to run', input: { image: {} }, error: /nothing to run/ },
  ];
  for (const c of cases) assert.throws(() => ociSpec({ image, rootfs: '/r', hostname: 'h', container: { name: 'c' }, ...c.input }), c.error, c.name);
});

test("ociSpec: the sidecar DaemonSet's shape: a user namespace, Unmasked /proc, hostPaths, a Localhost seccomp profile, $(VAR) args", () => {
  const { spec, notApplied } = ociSpec({
    image,
    rootfs: '/r',
    hostname: 'h',
    hostUsers: false,
    userNamespace: { hostId: 3_000_000, size: 65_536 },
    pod: { runAsUser: 0, seccompProfile: { type: 'Localhost', localhostProfile: 'agent-operator/sidecar.json' } },
    container: {
      name: 'sidecar',
      args: ['sidecar', '--node-name=$(NODE_NAME)'],
      env: [{ name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } }],
      securityContext: { procMount: 'Unmasked', capabilities: { drop: ['ALL'], add: ['SETUID'] } },
      volumeMounts: [{ name: 'root', mountPath: '/var/lib/ao' }],
    },
    volumes: [{ name: 'root', hostPath: { path: '/var/lib/ao', type: 'DirectoryOrCreate' } }],
    hostPaths: { '/var/lib/ao': '/tmp/x/ao' },
    resolvedEnv: { NODE_NAME: 'n1' },
    seccompRoot: join(PACKAGE_ROOT, 'deploy', 'seccomp'),
    cgroupsPath: '/t/c',
  });
  assert.deepEqual(notApplied, []);
  assert.deepEqual(spec.process.args.slice(-2), ['sidecar', '--node-name=n1'], '$(VAR) expanded as the kubelet does');
  assert.deepEqual(spec.linux.uidMappings, [{ containerID: 0, hostID: 3_000_000, size: 65_536 }]);
  assert.deepEqual(spec.linux.gidMappings, spec.linux.uidMappings);
  assert.ok(spec.linux.namespaces.some((n) => n.type === 'user'));
  assert.deepEqual([spec.linux.maskedPaths, spec.linux.readonlyPaths], [[], []]);
  assert.equal(spec.linux.cgroupsPath, '/t/c');
  assert.deepEqual(
    spec.mounts.find((m) => m.destination === '/var/lib/ao'),
    { destination: '/var/lib/ao', type: 'bind', source: '/tmp/x/ao', options: ['rbind', 'nosuid', 'nodev', 'rw'] },
  );
  assert.equal(spec.mounts.find((m) => m.destination === '/sys')?.type, 'bind', 'sysfs cannot be mounted from a user namespace without its own network namespace');
  assert.equal(spec.linux.seccomp?.defaultAction, 'SCMP_ACT_ERRNO');
});

test('seccompForContainer: rules by capability and architecture, as containerd and CRI-O load a profile', () => {
  const profile = {
    defaultAction: 'SCMP_ACT_ERRNO',
    defaultErrnoRet: 38,
    archMap: [
      { architecture: 'SCMP_ARCH_X86_64', subArchitectures: ['SCMP_ARCH_X86'] },
      { architecture: 'SCMP_ARCH_AARCH64', subArchitectures: ['SCMP_ARCH_ARM'] },
    ],
    syscalls: [
      { names: ['read'], action: 'SCMP_ACT_ALLOW' },
      { names: ['setns'], action: 'SCMP_ACT_ALLOW', includes: { caps: ['CAP_SYS_ADMIN'] } },
      { names: ['setns'], action: 'SCMP_ACT_ERRNO', errnoRet: 1, excludes: { caps: ['CAP_SYS_ADMIN'] } },
      { names: ['arch_prctl'], action: 'SCMP_ACT_ALLOW', includes: { arches: ['amd64'] } },
      { names: ['personality'], action: 'SCMP_ACT_ALLOW', args: [{ index: 0, value: 8, op: 'SCMP_CMP_EQ' }] },
    ],
  };
  const cases: { name: string; caps: string[]; arch: string; names: string[]; arches: string[] }[] = [
    { name: 'no capability, amd64', caps: [], arch: 'amd64', names: ['read', 'setns', 'arch_prctl', 'personality'], arches: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86'] },
    { name: 'CAP_SYS_ADMIN, arm64', caps: ['CAP_SYS_ADMIN'], arch: 'arm64', names: ['read', 'setns', 'personality'], arches: ['SCMP_ARCH_AARCH64', 'SCMP_ARCH_ARM'] },
  ];
  for (const c of cases) {
    const s = seccompForContainer(profile, c.caps, c.arch);
    assert.deepEqual(
      s.syscalls.map((r) => r.names[0]),
      c.names,
      c.name,
    );
    assert.deepEqual(s.architectures, c.arches, c.name);
    assert.equal(s.syscalls.find((r) => r.names[0] === 'setns')?.action, c.caps.includes('CAP_SYS_ADMIN') ? 'SCMP_ACT_ALLOW' : 'SCMP_ACT_ERRNO', c.name);
    assert.equal(s.defaultErrnoRet, 38);
  }
  assert.deepEqual(seccompForContainer(profile, [], 'amd64').syscalls.at(-1)?.args, [{ index: 0, value: 8, op: 'SCMP_CMP_EQ' }]);
  assert.equal(seccompForContainer(profile, [], 'amd64').syscalls[0]?.args, undefined, 'no empty args');
});
