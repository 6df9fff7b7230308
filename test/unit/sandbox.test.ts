import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { bytesOf, milliCpuOf, parseQuantity } from '../../src/api/quantity.js';
import { limitsOf } from '../../src/sidecar/agentWorker.js';
import { cgroup2Mount, checkAgentsCgroupName, defaultAgentsCgroupName, limitFiles, ownCgroup, parseCpuUsageUsec, parsePopulated } from '../../src/sidecar/runtime/cgroup.js';
import { stackAgentsCgroup } from '../../src/dev/stack.js';
import { sandboxStarted } from '../../src/sidecar/runtime/launcher.js';
import { checkLayout, checkTraversable, isWithin, joinCgroupArgv, sandboxArgv, type SandboxHost } from '../../src/sidecar/runtime/sandbox.js';
import { parseUidFile, parseUidRange, pickUid } from '../../src/sidecar/runtime/uids.js';

const HOST: SandboxHost = {
  mode: 'bwrap',
  system: [
    { kind: 'dir', path: '/usr' },
    { kind: 'symlink', path: '/bin', target: 'usr/bin' },
    { kind: 'dir', path: '/etc' },
  ],
  readOnly: ['/app'],
};

describe('sandboxArgv', () => {
  const argv = sandboxArgv(HOST, { uid: 200001, gid: 200001, writable: ['/n/agents/u/scratch', '/n/agents/u/home'], readOnly: ['/n/agents/u/prompt', '/n/bin'] });
  it('drops to the agent uid with no capabilities and no_new_privs before bwrap', () => {
    assert.deepEqual(argv.slice(0, argv.indexOf('bwrap')), [
      'setsid',
      'setpriv',
      '--reuid=200001',
      '--regid=200001',
      '--clear-groups',
      '--inh-caps=-all',
      '--bounding-set=-all',
      '--no-new-privs',
      '--',
    ]);
    for (const flag of ['--unshare-user', '--unshare-pid', '--unshare-ipc', '--disable-userns']) assert.ok(argv.includes(flag), flag);
    assert.ok(!argv.includes('--unshare-net'), 'the network is shared');
    assert.equal(argv.at(-1), '--');
  });
  it("mounts an allow-list: system read-only, /tmp private before anything under it, only the agent's own paths writable", () => {
    const pairs = (flag: string) => argv.flatMap((a, i) => (a === flag ? [argv[i + 2]!] : []));
    assert.deepEqual(pairs('--ro-bind'), ['/usr', '/etc', '/app', '/n/agents/u/prompt', '/n/bin']);
    assert.deepEqual(pairs('--bind'), ['/n/agents/u/scratch', '/n/agents/u/home']);
    assert.deepEqual(argv.slice(argv.indexOf('--symlink'), argv.indexOf('--symlink') + 3), ['--symlink', 'usr/bin', '/bin']);
    assert.ok(argv.indexOf('/tmp') < argv.indexOf('/n/agents/u/scratch'));
  });
  it("binds the report channel's directory, read-only, at the fixed path, after the writable paths", () => {
    const withChannel = sandboxArgv(HOST, { uid: 200001, gid: 200001, writable: ['/n/agents/u/scratch'], readOnly: [], channel: '/n/agents/u/channel' });
    const at = withChannel.indexOf('/n/agents/u/channel');
    assert.deepEqual(withChannel.slice(at - 1, at + 2), ['--ro-bind', '/n/agents/u/channel', '/run/agent-operator']);
    assert.ok(at > withChannel.indexOf('/n/agents/u/scratch'));
    assert.ok(!argv.includes('/run/agent-operator'), 'no channel asked for, none bound');
  });
  it('none: no prefix at all; a uid of 0 or below is refused', () => {
    assert.deepEqual(sandboxArgv({ ...HOST, mode: 'none' }, { uid: 0, gid: 0, writable: [], readOnly: [] }), []);
    assert.throws(() => sandboxArgv(HOST, { uid: 0, gid: 5, writable: [], readOnly: [] }), /positive integer/);
    assert.throws(() => sandboxArgv(HOST, { uid: 5, gid: -1, writable: [], readOnly: [] }), /positive integer/);
  });
  it('joins the cgroup by writing its own pid, then execs the rest', () => {
    assert.deepEqual(joinCgroupArgv('/sys/fs/cgroup/x/u').slice(3), ['agent-cgroup', '/sys/fs/cgroup/x/u/cgroup.procs']);
  });
});

describe('checkLayout', () => {
  it('refuses node state where every agent can see it', () => {
    assert.throws(() => checkLayout(HOST, { 'node root': '/etc/agent-operator' }), /node root \(\/etc\/agent-operator\) overlaps \/etc/);
    assert.throws(() => checkLayout(HOST, { kubeconfig: '/app/kubeconfig' }), /kubeconfig/);
    assert.throws(() => checkLayout(HOST, { 'node root': '/' }), /overlaps/);
    checkLayout(HOST, { 'node root': '/var/lib/agent-operator', kubeconfig: undefined, archive: '/var/lib/archive' });
    checkLayout({ ...HOST, mode: 'none' }, { 'node root': '/etc/x' });
  });
  it('isWithin is by path component', () => {
    assert.equal(isWithin('/usr/lib', '/usr'), true);
    assert.equal(isWithin('/usrx', '/usr'), false);
    assert.equal(isWithin('/usr', '/usr'), true);
  });
});

describe('checkTraversable', () => {
  it('names the directory an agent uid cannot pass on the way to what it must see (Node.js under a 0700 home)', async (t) => {
    const home = await mkdtemp(join(tmpdir(), 'ao-home-'));
    t.after(() => rm(home, { recursive: true, force: true }));
    const bin = join(home, '.cache', 'node', 'bin');
    await mkdir(bin, { recursive: true, mode: 0o755 });
    await chmod(home, 0o700);
    await assert.rejects(checkTraversable(bin, 'agent-operator and Node.js'), (err: Error) => {
      assert.equal(err.name, 'SandboxUnavailableError');
      assert.ok(err.message.includes(`agents cannot reach agent-operator and Node.js at ${bin}: ${home} is mode 0700`), err.message);
      return true;
    });
    await chmod(home, 0o711);
    await checkTraversable(bin, 'agent-operator and Node.js');
  });
});

describe('sandboxStarted', () => {
  it('only a first line of `started` means the launcher handed over to the sandbox (then cleanup spares it)', () => {
    const table: [string | undefined, boolean][] = [
      ['started\n', true],
      ['started\nagent-operator: not executable\n', true],
      [undefined, false],
      ['', false],
      ['not found\nstarted\n', false],
    ];
    for (const [text, want] of table) assert.equal(sandboxStarted(text), want, JSON.stringify(text));
  });
});

describe('uid allocation', () => {
  it("parses a range and refuses 0 and the sidecar's uid", () => {
    assert.deepEqual(parseUidRange('200000-200009'), { first: 200000, count: 10 });
    for (const bad of ['0-10', '10-5', 'x', '5', '1-4294967295']) assert.throws(() => parseUidRange(bad), /invalid uid range/, bad);
    assert.throws(() => parseUidRange('1000-2000', [1500]), /contains uid 1500/);
  });
  it('picks the lowest free uid, none when all are held', () => {
    const r = { first: 10, count: 3 };
    assert.equal(pickUid(r, new Set()), 10);
    assert.equal(pickUid(r, new Set([10, 11])), 12);
    assert.equal(pickUid(r, new Set([10, 11, 12])), undefined);
    assert.equal(parseUidFile('200001\n'), 200001);
    assert.equal(parseUidFile('-1'), undefined);
    assert.equal(parseUidFile(undefined), undefined);
  });
});

describe('cgroup parsing', () => {
  it('finds the cgroup2 mount (hybrid and unified) and our own cgroup', () => {
    const hybrid = [
      '30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755',
      '31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw',
      '32 30 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory',
    ].join('\n');
    assert.equal(cgroup2Mount(hybrid), '/sys/fs/cgroup/unified');
    assert.equal(cgroup2Mount('40 1 0:30 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate'), '/sys/fs/cgroup');
    assert.equal(cgroup2Mount('32 30 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory'), undefined);
    assert.equal(ownCgroup('4:memory:/x\n0::/kubepods/pod1/c1\n'), '/kubepods/pod1/c1');
    assert.equal(ownCgroup('0::/\n'), '/');
    assert.equal(ownCgroup('4:memory:/x\n'), undefined);
  });
  it('reads populated and CPU usage', () => {
    assert.equal(parsePopulated('populated 1\nfrozen 0\n'), true);
    assert.equal(parsePopulated('populated 0\nfrozen 0\n'), false);
    assert.equal(parsePopulated(''), undefined);
    assert.equal(parseCpuUsageUsec('usage_usec 1500\nuser_usec 1000\n'), 1500);
  });
  it('writes the limits the controllers enforce and lists the others', () => {
    assert.deepEqual(limitFiles({ memoryBytes: 1 << 30, cpuMillis: 500, pids: 64 }, ['cpu', 'memory', 'pids']), {
      files: [
        ['memory.max', String(1 << 30)],
        ['cpu.max', '50000 100000'],
        ['pids.max', '64'],
      ],
      notEnforced: [],
    });
    assert.deepEqual(limitFiles({ memoryBytes: 1, pids: 3 }, []), { files: [], notEnforced: ['memory', 'pids'] });
    assert.deepEqual(limitFiles({}, []), { files: [], notEnforced: [] });
  });
});

describe("the agents' cgroup name", () => {
  const cases: [string, string, RegExp | undefined][] = [
    ['the default', defaultAgentsCgroupName('node-1'), undefined],
    ['a 63-character node name', defaultAgentsCgroupName('n'.repeat(63)), undefined],
    ['underscores and capitals', 'Agents_Of_node2', undefined],
    ['empty', '', /one directory name/],
    ['a path', 'a/b', /one directory name/],
    ['the parent', '..', /one directory name/],
    ["an interface file's shape", 'cgroup.procs', /one directory name/],
    ['a leading dash', '-x', /one directory name/],
    ['too long', 'a'.repeat(201), /at most 200/],
    ["the sidecar's own leaf", 'sidecar', /the leaf the sidecar itself moves into/],
  ];
  for (const [what, name, refused] of cases) {
    it(`${what}: ${refused ? 'refused, naming the flag' : 'accepted'}`, () => {
      if (refused)
        assert.throws(
          () => checkAgentsCgroupName(name),
          (err: Error) => refused.test(err.message) && err.message.startsWith('--agents-cgroup:'),
        );
      else assert.doesNotThrow(() => checkAgentsCgroupName(name));
    });
  }

  it("a simulated node's is its stack's own: two stacks with the same node name never share one, a stack restarted on its state dir finds its own", () => {
    const a = stackAgentsCgroup('/tmp/stack-a', 'node-1');
    assert.equal(stackAgentsCgroup('/tmp/stack-a/', 'node-1'), a, 'the same state dir, however written');
    assert.notEqual(stackAgentsCgroup('/tmp/stack-b', 'node-1'), a);
    assert.notEqual(stackAgentsCgroup('/tmp/stack-a', 'node-2'), a);
    assert.notEqual(a, defaultAgentsCgroupName('node-1'), 'not what a sidecar started by hand on this machine uses');
    assert.ok(a.startsWith('agent-operator-node-1-'), a);
    for (const name of [a, stackAgentsCgroup('/tmp/x', 'n'.repeat(63))]) assert.doesNotThrow(() => checkAgentsCgroupName(name));
  });
});

describe('resource limits', () => {
  it('parses Kubernetes quantities and refuses anything else, naming the field', () => {
    assert.equal(bytesOf('512Mi', 'm'), 512 * 2 ** 20);
    assert.equal(bytesOf('1G', 'm'), 1e9);
    assert.equal(bytesOf('1.5Ki', 'm'), 1536);
    assert.equal(milliCpuOf('500m', 'c'), 500);
    assert.equal(milliCpuOf('2', 'c'), 2000);
    assert.equal(milliCpuOf('0.25', 'c'), 250);
    for (const bad of ['', '1 Gi', '-1', 'Mi', '1Gb', '1e3']) assert.throws(() => parseQuantity(bad, 'spec.x'), /spec\.x: .* is not a quantity/, bad);
  });
  it('spec.resources.limits become the runtime limits', () => {
    assert.deepEqual(limitsOf({ memory: '1Gi', cpu: '1500m', pids: 64 }), { memoryBytes: 2 ** 30, cpuMillis: 1500, pids: 64 });
    assert.deepEqual(limitsOf(undefined), {});
  });
});
