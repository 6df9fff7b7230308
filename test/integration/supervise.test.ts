/**
 * `agent-operator supervise`: with real child processes, a crashed child is started again after a
 * growing delay, a stop reaches the child and the supervisor exits as it did, a usage error is not
 * retried, and the real sidecar under it comes back after a SIGKILL.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { CoreV1Api } from '@kubernetes/client-node';
import { pino } from 'pino';
import { supervise } from '../../src/cmd/supervise.js';
import { freePorts } from '../../src/dev/ports.js';
import { agentNodeClient } from '../../src/kube/resources.js';
import { ensureNodeObject, killNodeLeftovers, OPERATOR_NAMESPACE, SIDECAR_SERVICE_ACCOUNT } from '../../src/dev/stack.js';
import { agentCgroupDir, defaultAgentsCgroupName, removeAgentCgroups } from '../../src/sidecar/runtime/cgroup.js';
import { parseStat } from '../../src/sidecar/runtime/procfs.js';
import { controlPlane, kubeConfig, uniqueSuffix, waitFor } from '../support/cluster.js';
import { useStack } from '../support/stack.js';
import { alive } from '../support/procs.js';

const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));
const quiet = pino({ level: 'silent' });

async function tempDir(t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'supervise-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Live (not zombie) children of `pid`. */
async function childrenOf(pid: number): Promise<number[]> {
  const tasks = await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => '');
  const pids = tasks.split(/\s+/).filter(Boolean).map(Number);
  const live = await Promise.all(pids.map(alive));
  return pids.filter((_, i) => live[i]);
}

describe('supervise', () => {
  it('restarts a crashing child with a growing delay; a stop reaches the child and the exit code is its', async (t) => {
    const dir = await tempDir(t);
    const log = join(dir, 'starts');
    // Crashes on its first two starts; the third stays up until SIGTERM, then exits 7.
    const script = `n=$(($(wc -l < "${log}" 2>/dev/null || echo 0) + 1)); echo "$n $(date +%s%3N)" >> "${log}"
      [ "$n" -lt 3 ] && exit 1
      trap 'echo term >> "${log}"; exit 7' TERM; while :; do sleep 0.05; done`;
    const stop = new AbortController();
    t.after(() => stop.abort());
    const pids: number[] = [];
    const done = supervise({
      command: 'sh',
      args: ['-c', script],
      logger: quiet,
      stop: stop.signal,
      policy: { initialDelayMs: 300, maxDelayMs: 10_000, resetAfterMs: 60_000 },
      onStart: (pid) => pids.push(pid),
    });
    await waitFor(async () => (await readFile(log, 'utf8').catch(() => '')).split('\n').filter(Boolean).length === 3, { timeoutMs: 10_000, what: 'the third start' });
    const starts = (await readFile(log, 'utf8'))
      .trim()
      .split('\n')
      .map((l) => Number(l.split(' ')[1]));
    assert.ok(starts[1]! - starts[0]! >= 300, `first restart after ${starts[1]! - starts[0]!} ms`);
    assert.ok(starts[2]! - starts[1]! >= 600, `second restart after ${starts[2]! - starts[1]!} ms: the delay doubles`);
    assert.equal(new Set(pids).size, 3);
    stop.abort();
    assert.equal(await done, 7, 'the supervisor exits as the child did');
    assert.match(await readFile(log, 'utf8'), /^term$/m, 'the child got SIGTERM');
  });

  it('a usage error of the command is not retried: exit 2, the flag named', async () => {
    const r = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [CLI, 'supervise', 'sidecar', '--no-such-flag'], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 20_000 });
      let stderr = '';
      child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
      child.once('exit', (code) => resolve({ code, stderr }));
    });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /no-such-flag/);
  });

  describe('the real sidecar', () => {
    // deploy/ installed (its ServiceAccounts and node policies), as on a cluster; no components.
    useStack('sup', { nodes: 0, controllers: 0 });
    it('the real sidecar under it: SIGKILLed, it is started again and serves; SIGTERM stops both', async (t) => {
      const dir = await tempDir(t);
      const node = `sup-${uniqueSuffix()}`;
      const [metricsPort, probePort] = await freePorts(2);
      // The identity a node's sidecar has: the node policies deploy/ installs admit nothing else.
      const kubeconfig = await (
        await controlPlane()
      ).serviceAccountKubeconfig(OPERATOR_NAMESPACE, SIDECAR_SERVICE_ACCOUNT, { expirationSeconds: 3600, boundTo: await ensureNodeObject(kubeConfig(), node) });
      const supervisor = spawn(
        process.execPath,
        [
          CLI,
          'supervise',
          'sidecar',
          `--node-name=${node}`,
          `--root=${dir}`,
          `--kubeconfig=${kubeconfig}`,
          `--metrics-bind-address=127.0.0.1:${metricsPort}`,
          `--health-probe-bind-address=127.0.0.1:${probePort}`,
        ],
        { stdio: 'ignore', detached: true },
      );
      const exited = new Promise<number | null>((resolve) => supervisor.once('exit', (code) => resolve(code)));
      t.after(async () => {
        if (supervisor.exitCode === null) process.kill(-supervisor.pid!, 'SIGKILL');
        await killNodeLeftovers(dir, quiet);
        // The agents' cgroup the sidecar made beside ours (it outlives the sidecar, as agents do).
        const cgroups = await agentCgroupDir(defaultAgentsCgroupName(node));
        if (cgroups) await removeAgentCgroups(cgroups);
        await agentNodeClient(kubeConfig()).delete({ name: node });
        await kubeConfig().makeApiClient(CoreV1Api).deleteNode({ name: node });
      });
      const healthy = async () => (await fetch(`http://127.0.0.1:${probePort}/readyz`).catch(() => undefined))?.status === 200;
      await waitFor(healthy, { timeoutMs: 30_000, what: 'the supervised sidecar to be ready' });
      const [first] = await childrenOf(supervisor.pid!);
      assert.ok(first, "the sidecar runs as the supervisor's child");
      process.kill(first, 'SIGKILL');
      const second = await waitFor(async () => (await childrenOf(supervisor.pid!)).find((p) => p !== first), { timeoutMs: 15_000, what: 'a new sidecar process' });
      await waitFor(healthy, { timeoutMs: 30_000, what: 'the restarted sidecar to be ready' });
      assert.equal(supervisor.exitCode, null, "the supervisor (the container's main process) lived on");
      process.kill(supervisor.pid!, 'SIGTERM');
      assert.equal(await exited, 0);
      assert.deepEqual(await childrenOf(second), []);
      assert.equal(parseStat(await readFile(`/proc/${second}/stat`, 'utf8').catch(() => ''))?.pid, undefined, 'the sidecar stopped with it');
    });
  });
});
