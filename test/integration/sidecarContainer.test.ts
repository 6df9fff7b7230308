/**
 * The sidecar in the DaemonSet's own container (issue 8, item 7): deploy/'s DaemonSet run in runc
 * with exactly its securityContext, capabilities, seccomp profile, user namespace and volumes
 * (test/support/sidecarContainer.ts), against the run's control plane and a controller, and the
 * hostile-agent table in it, judged from outside: the host's /proc, the hostPath directories, the
 * API. And the positive side.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { controlPlane, createTestNamespace, uniqueSuffix, waitFor } from '../support/cluster.js';
import { startSidecarContainer, type SidecarContainer } from '../support/sidecarContainer.js';
import { createAgent, useStack, waitForCleanedUp } from '../support/stack.js';

const logger = pino({ level: process.env.LOG_LEVEL ?? 'warn' }, pino.destination(2));

/** Fields of /proc/<pid>/status. */
async function procStatus(pid: number): Promise<Record<string, string>> {
  const text = await readFile(`/proc/${pid}/status`, 'utf8');
  return Object.fromEntries(text.split('\n').map((l) => l.split(':\t')).filter((kv) => kv.length === 2).map(([k, v]) => [k!, v!.trim()]));
}

/** The capability names in a /proc status mask. */
function capNames(hex: string): string[] {
  const names = ['CHOWN', 'DAC_OVERRIDE', 'DAC_READ_SEARCH', 'FOWNER', 'FSETID', 'KILL', 'SETGID', 'SETUID', 'SETPCAP', 'LINUX_IMMUTABLE', 'NET_BIND_SERVICE', 'NET_BROADCAST', 'NET_ADMIN', 'NET_RAW', 'IPC_LOCK', 'IPC_OWNER', 'SYS_MODULE', 'SYS_RAWIO', 'SYS_CHROOT', 'SYS_PTRACE', 'SYS_PACCT', 'SYS_ADMIN'];
  const mask = BigInt(`0x${hex}`);
  return names.filter((_, i) => (mask >> BigInt(i)) & 1n).sort();
}

describe("the sidecar in the DaemonSet's container (runc)", () => {
  // A controller of its own; the node is the container below.
  useStack('sidecar-oci', { nodes: 0, controllers: 1 });
  let sc: SidecarContainer | undefined;
  const node = () => sc!;

  before(
    async () => {
      const id = `ao-sidecar-${uniqueSuffix()}`;
      sc = await startSidecarContainer({ cp: await controlPlane(), nodeName: `oci-node-${uniqueSuffix()}`, logger, id });
      const ready = await waitFor(
        async () => {
          if (!sc!.ctr.runc.running()) return 'exited';
          return (await fetch(`${sc!.healthUrl}/readyz`, { signal: AbortSignal.timeout(2000) }).catch(() => undefined))?.ok ? 'ready' : undefined;
        },
        { timeoutMs: 90_000, what: 'the sidecar in runc to be ready' },
      ).catch((err: unknown) => (err as Error).message);
      if (ready !== 'ready') throw new Error(`the sidecar in runc: ${ready}\n${sc.ctr.runc.logTail()}`);
    },
    { timeout: 180_000 },
  );
  after(async () => {
    if (!sc) return;
    const cp = await controlPlane();
    await sc.remove();
    await cp.kubectl(['delete', 'agentnodes', sc.nodeName, '--ignore-not-found', '--wait=false'], { timeoutMs: 30_000 });
  });

  it('runs with exactly what deploy/ declares: its capabilities, no_new_privs, the Localhost seccomp profile, its own user namespace', async (t) => {
    t.diagnostic(`not reproduced in runc: ${node().notApplied.join('; ') || 'nothing'}`);
    assert.deepEqual(node().notApplied, []);
    const pid = await node().ctr.initPid();
    const status = await procStatus(pid);
    assert.equal(status.NoNewPrivs, '1');
    assert.equal(status.Seccomp, '2', 'a seccomp filter is installed');
    assert.deepEqual(capNames(status.CapEff!), ['CHOWN', 'DAC_OVERRIDE', 'FOWNER', 'KILL', 'SETGID', 'SETUID']);
    assert.equal(status.CapBnd, status.CapEff);
    // Root in the container is an unprivileged uid on the host.
    assert.equal(status.Uid, Array(4).fill(node().hostRoot).join('\t'));
    assert.equal((await readFile(`/proc/${pid}/uid_map`, 'utf8')).trim().split(/\s+/).join(' '), `0 ${node().hostRoot} 65536`);
    assert.equal(node().spec.linux.maskedPaths.length, 0, 'procMount: Unmasked');
  });

  it('a normal agent: its own uid, HOME, workspace and /tmp writable, prompt readable, reports; cleaned up by its cgroup', async (t) => {
    const ns = await createTestNamespace(t, 'oci-positive');
    const script = [
      'set -e',
      'test "$(id -u)" -ne 0',
      'echo home > "$HOME/h" && cat "$HOME/h"',
      'echo ws > ws && cat ws',
      'echo tmp > /tmp/t && cat /tmp/t',
      'printf "prompt=%s\\n" "$(cat "$AGENT_PROMPT_FILE")"',
      'agent-operator report --status working --progress 50 --message from-the-container',
      'echo all-good',
    ].join('\n');
    await createAgent(ns, 'normal', { command: ['sh', '-c', script], prompt: 'read me', nodeName: node().nodeName });
    const a = await waitForCleanedUp(ns, 'normal', 120_000);
    const out = await readFile(join(node().onHost(a.status!.cleanup!.archivePath!), 'output.log'), 'utf8').catch(() => '');
    assert.equal(a.status?.phase, 'Completed', `${a.status?.reason}: ${a.status?.message}\n${out}\n${node().ctr.runc.logTail()}`);
    assert.equal(a.status?.nodeName, node().nodeName);
    assert.match(out, /home\r\nws\r\ntmp\r\nprompt=read me\r\n/);
    assert.match(out, /all-good/);
    assert.equal(a.status?.progress, 50);
    assert.equal(a.status?.cleanup?.verifiedNoProcesses, true);
    assert.equal(a.status?.cleanup?.cgroupRemoved, true);
  });
});
