/**
 * Hostile input end to end: names at the limits Kubernetes allows, and prompts, args and env values
 * full of shell syntax reach the agent byte-exact and are never executed. Values from Secrets and
 * ConfigMaps too; a missing Secret is a clear launch error.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { CoreV1Api, EventsV1Api } from '@kubernetes/client-node';
import { createTestNamespace, kubeConfig } from '../support/cluster.js';
import { archivedOutput, assertNothingLeft, createAgent, useStack, waitForAgent, waitForCleanedUp, type AgentObj } from '../support/stack.js';

const sha256 = (data: string | Buffer) => createHash('sha256').update(data).digest('hex');

/**
 * A script that prints `<label> <sha256>` for the prompt file, each named env var and each
 * positional argument, so the test can compare bytes without them passing through the terminal.
 * No `$$` in it, and its `$(...)` name no variable: the command's $(VAR) expansion leaves it as written.
 */
function digestScript(envNames: readonly string[]): string {
  return [
    'set -e',
    'printf "prompt %s\\n" "$(sha256sum < "$AGENT_PROMPT_FILE" | cut -d" " -f1)"',
    ...envNames.map((n) => `printf "env:${n} %s\\n" "$(printf %s "$${n}" | sha256sum | cut -d" " -f1)"`),
    'i=1; for a in "$@"; do printf "arg:%d %s\\n" "$i" "$(printf %s "$a" | sha256sum | cut -d" " -f1)"; i=$((i+1)); done',
    'echo digests-done',
  ].join('\n');
}

/** The `<label> <hex>` lines the digest script printed. */
function digests(output: string): Map<string, string> {
  return new Map([...output.matchAll(/^(\S+) ([0-9a-f]{64})\s*$/gm)].map((m) => [m[1]!, m[2]!]));
}

/** Shell syntax that would touch `canary` if anything ran it through a shell. */
function hostileStrings(canary: string): string[] {
  return [
    `$(touch ${canary})`,
    `\`touch ${canary}\``,
    `; touch ${canary}; `,
    `"; touch ${canary}; echo "`,
    `'; touch ${canary}; echo '`,
    `\ntouch ${canary}\n`,
    `| touch ${canary} &`,
    `&& touch ${canary} || touch ${canary}`,
    `$HOME \${HOME} $1 $@ $* %s %n \\ \\\\ \\n`,
    `-rf --help`,
    `==  x=y  `,
    'ünïcødé ✓ 漢字 🚀',
    'trailing newlines\n\n',
    '\ttabs\tand\r\ncarriage returns\x1b[31m and an escape',
  ];
}

async function canaryPath(t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'canary-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return join(dir, 'canary');
}

async function assertNoCanary(canary: string): Promise<void> {
  const exists = await stat(canary).then(
    () => true,
    () => false,
  );
  assert.equal(exists, false, `${canary} exists: some input was executed`);
}

async function completedWithDigests(ns: string, name: string): Promise<{ agent: AgentObj; got: Map<string, string> }> {
  const agent = await waitForCleanedUp(ns, name);
  const out = await archivedOutput(agent);
  assert.equal(agent.status?.phase, 'Completed', `${name}: ${agent.status?.phase}/${agent.status?.reason}: ${agent.status?.message}\n${out}`);
  assert.match(out, /digests-done/);
  return { agent, got: digests(out) };
}

describe('agent lifecycle: hostile input', () => {
  const stack = useStack('life-input');
  const core = () => kubeConfig().makeApiClient(CoreV1Api);

  it('names at the limits Kubernetes allows: launched, cleaned, archived, with Events', async (t) => {
    const ns = await createTestNamespace(t, 'life-input-names-with-a-namespace-name-this-long-ok');
    // 253 characters, dots and dashes: the longest valid object name.
    const label = (c: string) => `${c}${'-'.repeat(30)}${c.repeat(32)}`; // 63
    const long = [label('a'), label('b'), label('c'), label('d')].join('.').slice(0, 253);
    assert.equal(long.length, 253);
    // Cut where a derived name (an Event's `<name>.<suffix>`) would be cut: the cut must not end on '-'.
    const dashy = `${'a'.repeat(235)}-${'b'.repeat(17)}`;
    const names = [long, dashy, '0', 'x.y'];
    for (const name of names) await createAgent(ns, name, { command: ['sh', '-c', digestScript(['AGENT_NAME', 'AGENT_NAMESPACE'])] });
    for (const name of names) {
      const { agent, got } = await completedWithDigests(ns, name);
      assert.equal(got.get('env:AGENT_NAME'), sha256(name));
      assert.equal(got.get('env:AGENT_NAMESPACE'), sha256(ns));
      await assertNothingLeft(stack(), agent);
    }
    const events = await kubeConfig().makeApiClient(EventsV1Api).listNamespacedEvent({ namespace: ns });
    for (const name of [long, dashy]) {
      const uid = (await waitForCleanedUp(ns, name)).metadata!.uid;
      assert.ok(
        events.items.some((e) => e.regarding?.uid === uid && e.reason === 'CleanedUp'),
        `no CleanedUp Event for ${name}: ${events.items.map((e) => `${e.regarding?.name}:${e.reason}`).join(', ')}`,
      );
    }
  });

  it('shell metacharacters in prompt, args and env values: byte-exact, never executed', async (t) => {
    const ns = await createTestNamespace(t, 'life-input-hostile');
    const canary = await canaryPath(t);
    const hostile = hostileStrings(canary);
    // A 200 KiB prompt made of the hostile strings, plus every byte value a JSON string can carry but NUL.
    const controls = Array.from({ length: 127 }, (_, i) => String.fromCharCode(i + 1)).join('');
    const unit = `${hostile.join('\n')}${controls}`;
    const prompt = unit.repeat(Math.ceil((200 * 1024) / Buffer.byteLength(unit)));
    assert.ok(Buffer.byteLength(prompt) >= 200 * 1024);
    const env = hostile.map((value, i) => ({ name: `HOSTILE_${i}`, value }));
    await createAgent(ns, 'hostile', {
      prompt,
      command: ['sh', '-c', digestScript(env.map((e) => e.name)), 'digest', ...hostile],
      env,
    });
    const { agent, got } = await completedWithDigests(ns, 'hostile');
    assert.equal(got.get('prompt'), sha256(prompt), 'the prompt file differs from spec.prompt');
    env.forEach((e) => assert.equal(got.get(`env:${e.name}`), sha256(e.value), `env ${e.name} (${JSON.stringify(e.value)}) differs`));
    hostile.forEach((a, i) => assert.equal(got.get(`arg:${i + 1}`), sha256(a), `arg ${i + 1} (${JSON.stringify(a)}) differs`));
    await assertNoCanary(canary);
    await assertNothingLeft(stack(), agent);
  });

  it('the prompt on stdin, byte-exact', async (t) => {
    const ns = await createTestNamespace(t, 'life-input-stdin');
    const canary = await canaryPath(t);
    const prompt = `${hostileStrings(canary).join('\n')}\n`;
    await createAgent(ns, 'stdin', { prompt, promptOnStdin: true, command: ['sha256sum'] });
    const agent = await waitForCleanedUp(ns, 'stdin');
    assert.equal(agent.status?.phase, 'Completed');
    assert.match(await archivedOutput(agent), new RegExp(`^${sha256(prompt)}  -`, 'm'));
    await assertNoCanary(canary);
    await assertNothingLeft(stack(), agent);
  });

  it('promptFrom a Secret (binary) and a ConfigMap, env valueFrom a Secret: byte-exact, values verbatim', async (t) => {
    const ns = await createTestNamespace(t, 'life-input-refs');
    const canary = await canaryPath(t);
    // Not valid UTF-8: a Secret carries bytes, and so must the prompt file.
    const secretPrompt = Buffer.concat([Buffer.from([0xff, 0xfe, 0x00, 0x80]), Buffer.from(`$(touch ${canary})`)]);
    // Values from a Secret are not $(VAR)-expanded (as the kubelet does), even for a defined variable.
    const secretValue = `$(AGENT_NAME) $$ \`touch ${canary}\`\n`;
    const cmPrompt = `${hostileStrings(canary).join('\n')}\n`;
    await core().createNamespacedSecret({
      namespace: ns,
      body: { metadata: { name: 'agent-secrets' }, data: { prompt: secretPrompt.toString('base64'), token: Buffer.from(secretValue).toString('base64') } },
    });
    await core().createNamespacedConfigMap({ namespace: ns, body: { metadata: { name: 'prompts' }, data: { 'task.md': cmPrompt } } });
    const command = ['sh', '-c', digestScript(['TOKEN'])];
    const env = [{ name: 'TOKEN', valueFrom: { secretKeyRef: { name: 'agent-secrets', key: 'token' } } }];
    await createAgent(ns, 'from-secret', { prompt: undefined, promptFrom: { secretKeyRef: { name: 'agent-secrets', key: 'prompt' } }, command, env });
    await createAgent(ns, 'from-configmap', { prompt: undefined, promptFrom: { configMapKeyRef: { name: 'prompts', key: 'task.md' } }, command, env });
    const fromSecret = await completedWithDigests(ns, 'from-secret');
    assert.equal(fromSecret.got.get('prompt'), sha256(secretPrompt));
    assert.equal(fromSecret.got.get('env:TOKEN'), sha256(secretValue));
    const fromCm = await completedWithDigests(ns, 'from-configmap');
    assert.equal(fromCm.got.get('prompt'), sha256(cmPrompt));
    await assertNoCanary(canary);
    await assertNothingLeft(stack(), fromSecret.agent);
    await assertNothingLeft(stack(), fromCm.agent);
  });

  it('a missing Secret or key: Error (LaunchFailed) naming the field and the Secret, nothing started', async (t) => {
    const ns = await createTestNamespace(t, 'life-input-missing');
    await core().createNamespacedSecret({ namespace: ns, body: { metadata: { name: 'present' }, stringData: { other: 'x' } } });
    const cases = [
      {
        name: 'prompt-missing',
        spec: { prompt: undefined, promptFrom: { secretKeyRef: { name: 'no-such-secret', key: 'prompt' } } },
        message: /spec\.promptFrom\.secretKeyRef.*Secret "no-such-secret" not found/,
      },
      {
        name: 'env-missing',
        spec: { env: [{ name: 'API_KEY', valueFrom: { secretKeyRef: { name: 'api-credentials', key: 'key' } } }] },
        message: /spec\.env\[0\]\.valueFrom\.secretKeyRef.*Secret "api-credentials" not found/,
      },
      {
        name: 'key-missing',
        spec: { env: [{ name: 'API_KEY', valueFrom: { secretKeyRef: { name: 'present', key: 'key' } } }] },
        message: /spec\.env\[0\]\.valueFrom\.secretKeyRef.*Secret "present" has no key "key"/,
      },
    ];
    for (const c of cases) await createAgent(ns, c.name, { command: ['sh', '-c', 'echo should-never-run'], ...c.spec });
    for (const c of cases) {
      const a = await waitForCleanedUp(ns, c.name);
      assert.equal(a.status?.phase, 'Error', `${c.name}: ${a.status?.phase}`);
      assert.equal(a.status?.reason, 'LaunchFailed');
      assert.match(a.status?.message ?? '', c.message);
      assert.equal(a.status?.startTime, undefined, 'the session never started');
      // The controller writes the condition after the node's record.
      const withCondition = await waitForAgent(ns, c.name, (x) => x.status?.conditions?.some((k) => k.type === 'CleanedUp' && k.status === 'True') ?? false, 'to have CleanedUp');
      const cleaned = withCondition.status?.conditions?.find((k) => k.type === 'CleanedUp');
      assert.match(cleaned?.message ?? '', /no logs to archive/, 'the condition must not claim logs were archived');
      await assertNothingLeft(stack(), a);
    }
  });
});
