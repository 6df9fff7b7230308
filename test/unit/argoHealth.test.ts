/**
 * The Argo CD health check in a real lua5.1: the harness (any string survives the trip into a Lua
 * table), and the script on controller decisions the real stack passes too quickly to catch
 * (test/integration/gitops.test.ts covers every phase there).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { execa } from 'execa';
import { planAgent } from '../../src/controller/reconcile.js';
import { argoHealth, toLua } from '../support/argoHealth.js';

/** Splits `<byte length>:<bytes>` records. */
function records(buf: Buffer): string[] {
  const out: string[] = [];
  for (let i = 0; i < buf.length;) {
    const colon = buf.indexOf(':', i);
    const len = Number(buf.subarray(i, colon).toString());
    out.push(buf.subarray(colon + 1, colon + 1 + len).toString('utf8'));
    i = colon + 1 + len;
  }
  return out;
}

test('toLua: strings with quotes, backslashes, newlines, control bytes and UTF-8 come back unchanged', async () => {
  const values = ['plain', 'say "hi"', 'C:\\path\\', 'two\nlines\r\n', 'tab\there', 'nul\x00byte1', '\x1b[31mred', 'müde ✓', '[[long]]', ''];
  const obj = { items: values, nested: { n: 3, f: 1.5, t: true, none: null } };
  const script = `local obj = ${toLua(obj)}
for _, v in ipairs(obj.items) do io.write(#v, ":", v) end
local n = obj.nested
local summary = table.concat({tostring(n.n), tostring(n.f), tostring(n.t), tostring(n.none), tostring(#obj.items)}, " ")
io.write(#summary, ":", summary)`;
  const r = await execa('lua5.1', ['-'], { input: script, timeout: 10_000, encoding: 'buffer' });
  const got = records(Buffer.from(r.stdout));
  assert.equal(got.pop(), `3 1.5 true nil ${values.length}`);
  assert.deepEqual(got, values);
});

test('the Argo CD health check on what the controller decides: the moments the real stack cannot pin down', async () => {
  const now = Date.parse('2026-11-25T10:00:00Z');
  const base = {
    apiVersion: 'orchestrator.dev/v1alpha1',
    kind: 'Agent',
    metadata: { name: 'a', namespace: 'ns', uid: 'u', generation: 1, finalizers: ['orchestrator.dev/cleanup'], labels: { 'orchestrator.dev/node': 'n1' } },
    spec: { prompt: 'p', command: ['true'] },
  };
  const decide = (status: Record<string, unknown>) => {
    const agent = { ...base, status };
    const plan = planAgent({
      agent,
      nodes: new Map([['n1', { name: 'n1', labels: {}, ready: true, unschedulable: false, capacity: 1 }]]),
      used: new Map(),
      now,
      config: { nodeLostGraceMs: 60_000, unschedulableRetryMs: 15_000, launchTimeoutMs: 300_000 },
    });
    return { ...agent, status: { ...status, ...plan.status } };
  };
  const cleanup = {
    startTime: '2026-11-25T09:59:58Z',
    completionTime: '2026-11-25T09:59:59Z',
    sessionKilled: true,
    processesKilled: 0,
    escalatedToSigkill: false,
    promptDeleted: true,
    logsArchived: true,
    verifiedNoProcesses: true,
  };
  const cases: { name: string; obj: unknown; status: string; message: RegExp }[] = [
    { name: 'no status at all (a server without the schema default)', obj: base, status: 'Progressing', message: /^Waiting for the agent-operator controller to observe generation 1$/ },
    {
      name: 'completed, cleanup not recorded yet',
      obj: decide({ nodeName: 'n1', phase: 'Running', startTime: '2026-11-25T09:59:00Z', exitCode: 0 }),
      status: 'Progressing',
      message: /^Completed \(CleaningUp\): the command exited with code 0; waiting for node n1 to record its cleanup$/,
    },
    {
      name: 'then cleaned up',
      obj: decide({ nodeName: 'n1', phase: 'Completed', reason: 'Exited', message: 'the command exited with code 0', completionTime: '2026-11-25T09:59:30Z', cleanup }),
      status: 'Healthy',
      message: /^Completed \(Exited\): the command exited with code 0$/,
    },
    {
      name: 'a spec change the controller has not seen yet',
      obj: { ...decide({ nodeName: 'n1', phase: 'Running', startTime: '2026-11-25T09:59:00Z' }), metadata: { ...base.metadata, generation: 2 } },
      status: 'Progressing',
      message: /observe generation 2$/,
    },
  ];
  for (const c of cases) {
    const got = await argoHealth(c.obj);
    assert.equal(got.status, c.status, `${c.name}: ${got.message}`);
    assert.match(got.message, c.message, c.name);
  }
});
