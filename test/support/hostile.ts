/**
 * Issue 8's hostile agent, shared by the host stack's table (hostile.test.ts) and the DaemonSet's
 * container (sidecarContainer.test.ts): the attack as a shell script, and what is judged from
 * outside. Paths are the sidecar's own (what the attacker would learn of the node's layout).
 */
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { environValue } from '../../src/sidecar/runtime/procfs.js';
import type { WorkspacePaths } from '../../src/sidecar/runtime/workspace.js';

/** `<pid> <name>` of every live host process (zombies hold nothing) whose real uid is `uid`. */
export async function pidsOfUser(uid: number): Promise<string[]> {
  const out: string[] = [];
  for (const pid of (await readdir('/proc')).filter((n) => /^\d+$/.test(n))) {
    const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
    const real = /^Uid:\s+(\d+)/m.exec(status)?.[1];
    if (real === undefined || Number(real) !== uid || /^State:\s+Z/m.test(status)) continue;
    out.push(`${pid} ${/^Name:\s+(.*)$/m.exec(status)?.[1]}`);
  }
  return out;
}

/** The environment of the agent's command, read as root from outside (its deepest marker process). */
export async function environOf(uid: string): Promise<Buffer> {
  for (const pid of (await readdir('/proc')).filter((n) => /^\d+$/.test(n)).sort((a, b) => Number(b) - Number(a))) {
    const env = await readFile(`/proc/${pid}/environ`).catch(() => undefined);
    if (env && environValue(env, 'AGENT_UID') === uid && environValue(env, 'VICTIM_SECRET') !== undefined) return env;
  }
  throw new Error(`no process of ${uid} found`);
}

/** A sandboxed agent's report channel is its own socket: no token or URL in its env for anyone to steal. */
export function assertChannelOnly(env: Buffer): void {
  assert.equal(environValue(env, 'AGENT_REPORT_SOCKET'), '/run/agent-operator/report.sock');
  assert.equal(environValue(env, 'AGENT_REPORT_TOKEN'), undefined);
  assert.equal(environValue(env, 'AGENT_REPORT_URL'), undefined);
}

/** What the attacker printed, for the test's diagnostics: its first 40 lines but the environments it dumped. */
export function attackDiagnostic(out: string): string {
  return out
    .split('\n')
    .filter((l) => !l.startsWith('ENV: '))
    .slice(0, 40)
    .join('\n');
}

/** Files of the node an attacker tries to plant or overwrite (none may exist or change afterwards). */
export function plantedPaths(root: string, victim: WorkspacePaths): string[] {
  return ['/usr/pwned', '/etc/pwned', '/pwned', `${root}/pwned`, `${root}/bin/agent-operator`, `${victim.scratch}/pwned`];
}

/**
 * Every attack prints what it got; the caller judges the output and the node from outside.
 * `credentials`: the sidecar's (its kubeconfig, its ServiceAccount token); `reportPort`: the
 * sidecar's loopback report endpoint.
 */
export function attackScript(o: { root: string; victim: WorkspacePaths; victimUid: string; credentials: readonly string[]; reportPort: number }): string {
  const v = o.victim;
  return [
    'echo "TMUX=[$TMUX] TMUX_PANE=[$TMUX_PANE]"',
    'for f in /proc/[0-9]*/environ; do tr "\\0" "\\n" < "$f"; done 2>/dev/null | sed "s/^/ENV: /"',
    'ps -eo pid,user,args 2>&1 | sed "s/^/PS: /"',
    `cat "${v.prompt}" "${v.output}" "${v.agentJson}" 2>&1 | sed "s/^/VICTIM: /"`,
    // The victim's files by its uid, and any unix socket (the node's tmux server, the sidecar's).
    `find / -path /proc -prune -o \\( -name "*${o.victimUid}*" -o -type s \\) -print 2>/dev/null | sed "s/^/FOUND: /"`,
    `cat ${o.credentials.map((c) => `"${c}"`).join(' ')} 2>&1 | sed "s/^/CRED: /"`,
    // The victim's report socket by its node path, and the loopback endpoint with a token of any kind.
    // (through a short link: the node path may be longer than a socket address holds)
    `ln -s "${v.channel}" /tmp/v; curl -sS --max-time 5 --unix-socket /tmp/v/report.sock -H "Content-Type: application/json" -d '{"status":"failed","message":"forged"}' http://agent/v1/report 2>&1 | sed "s/^/VSOCK: /"`,
    `curl -sS --max-time 5 -H "Authorization: Bearer stolen" -H "Content-Type: application/json" -d '{"status":"failed","message":"forged"}' http://127.0.0.1:${o.reportPort}/v1/report 2>&1 | sed "s/^/HTTP: /"; echo`,
    // Squatting its own channel: replace the socket, plant another, rebind it (the directory is the node's).
    'rm -f /run/agent-operator/report.sock 2>&1 | sed "s/^/SQUAT: /"; touch /run/agent-operator/x 2>&1 | sed "s/^/SQUAT: /"',
    `node -e 'require("net").createServer().listen("/run/agent-operator/report.sock").on("error", (e) => console.log("SQUAT: " + e.code))'`,
    'agent-operator report --status working --progress 77 --message after-the-squat 2>&1 | sed "s/^/OWN: /"',
    `tmux -S "${o.root}/tmux.sock" kill-server 2>&1 | sed "s/^/TMUX: /"; tmux kill-server 2>&1 | sed "s/^/TMUX: /"; ls /tmp/tmux-* 2>&1 | sed "s/^/TMUX: /"`,
    `echo 0 > "${v.exitCode}" 2>&1; echo 0 > "${v.dir}/exit-code.tmp" 2>&1`,
    `for p in "${v.agentJson}" "${v.exitCode}" "${v.launchError}"; do mkfifo "$p" 2>/dev/null; ln -sf /dev/zero "$p" 2>/dev/null; ln -sf /etc/shadow "$p" 2>/dev/null; done`,
    `for f in ${plantedPaths(o.root, v)
      .map((p) => `"${p}"`)
      .join(' ')}; do echo pwned > "$f" 2>/dev/null; done`,
    'mkfifo exit-code agent.json; ln -s /etc/shadow launch-error; ln -s /dev/zero output.log',
    'cat /etc/shadow 2>&1 | head -1 | sed "s/^/SHADOW: /"',
    'unshare -U true 2>&1 | sed "s/^/USERNS: /"',
    'echo attack-done',
    // Last: SIGKILL to every process it can see (in its PID namespace: its own).
    'kill -9 -1',
  ].join('\n');
}

/** What the attacker printed shows nothing it should not have got. */
export function assertAttackGotNothing(out: string, secrets: Readonly<Record<string, string>>): void {
  assert.match(out, /attack-done/);
  for (const [what, value] of Object.entries(secrets)) assert.ok(!out.includes(value), `the attacker got the ${what}`);
  assert.match(out, /TMUX=\[\] TMUX_PANE=\[\]/);
  // The one socket it finds is its own channel.
  assert.deepEqual(
    out
      .split('\n')
      .filter((l) => l.startsWith('FOUND: '))
      .map((l) => l.trim()),
    ['FOUND: /run/agent-operator/report.sock'],
    'node files visible in the sandbox',
  );
  assert.match(out, /^VSOCK: curl: \(7\) /m, "the victim's socket is not in the attacker's sandbox");
  assert.match(out, /^HTTP: \{"error":"invalid report token"\}/m);
  assert.equal(out.match(/^SQUAT: /gm)?.length, 3, out);
  assert.match(out, /^SQUAT: rm: cannot remove .*(Permission denied|Read-only file system)/m);
  assert.match(out, /^SQUAT: (EADDRINUSE|EACCES|EROFS)$/m);
  assert.match(out, /^OWN: recorded at /m, 'its own channel survived the squatting attempts');
  assert.doesNotMatch(out, /^SHADOW: root:/m);
  assert.match(out, /^USERNS: .*(No space left|Operation not permitted|denied)/m, 'nested user namespaces are disabled');
  // In its own PID namespace it sees only itself: a handful of processes, all its own uid.
  const ps = out.split('\n').filter((l) => l.startsWith('PS: ') && !l.includes('PID'));
  assert.ok(ps.length > 0 && ps.length < 8, `ps saw ${ps.length} processes:\n${ps.join('\n')}`);
}

/**
 * The positive side: a normal agent uses its HOME, workspace, /tmp, prompt (`read me`), reports 50%
 * and records the finding `via curl` with the plain HTTP form on its socket (docs/reporting.md).
 */
export function normalAgentScript(extra: readonly string[] = []): string {
  return [
    'set -e',
    'test "$(id -u)" -ne 0',
    'echo home > "$HOME/h" && cat "$HOME/h"',
    'echo ws > ws && cat ws',
    'echo tmp > /tmp/t && cat /tmp/t',
    'printf "prompt=%s\\n" "$(cat "$AGENT_PROMPT_FILE")"',
    'agent-operator report --status working --progress 50 --message from-the-sandbox',
    `curl -fsS --unix-socket "$AGENT_REPORT_SOCKET" -H 'Content-Type: application/json' -d '{"type":"note","severity":"info","message":"via curl"}' http://agent/v1/findings`,
    'echo',
    'echo all-good',
    ...extra,
  ].join('\n');
}

/** What normalAgentScript printed, in its captured output. */
export function assertNormalAgentOutput(out: string): void {
  assert.match(out, /home\r\nws\r\ntmp\r\nprompt=read me\r\n/);
  assert.match(out, /all-good/);
}
