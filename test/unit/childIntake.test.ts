import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Agent } from '../../src/api/agent.js';
import { LIMITS } from '../../src/api/constants.js';
import type { SpawnChild } from '../../src/report/protocol.js';
import { childAgentName, childrenAnswer, intakeSpawn, intakeStop, tailLines, type SpawnIntake } from '../../src/sidecar/children.js';

const T1 = '2026-11-25T10:00:01Z';
const T2 = '2026-11-25T10:00:02Z';

function parent(status: Agent['status'] = {}, name = 'lead'): Agent {
  return { metadata: { name, namespace: 'ns', uid: 'u' }, spec: { prompt: 'p', command: ['x'] }, status };
}

const ask = (name: string, prompt = 'do it'): SpawnChild => ({ name, prompt, command: ['true'] });
const asked = (name: string, requestTime = T1, prompt = 'do it') => ({ name, requestTime, spec: { prompt, command: ['true'] } });

describe('intakeSpawn', () => {
  const cases: { name: string; parent: Agent; input: SpawnChild; expect: (r: SpawnIntake) => void }[] = [
    {
      name: 'a new child: appended, named <parent>-<name>',
      parent: parent(),
      input: ask('a'),
      expect: (r) => assert.deepEqual(r, { name: 'lead-a', requestTime: T2, write: [asked('lead-a', T2)] }),
    },
    {
      name: 'the full name given: not prefixed twice',
      parent: parent(),
      input: ask('lead-a'),
      expect: (r) => assert.equal('name' in r && r.name, 'lead-a'),
    },
    {
      name: 'the same request again, not answered yet: no write, the first request time',
      parent: parent({ spawnRequests: [asked('lead-a')] }),
      input: ask('a'),
      expect: (r) => assert.deepEqual(r, { name: 'lead-a', requestTime: T1 }),
    },
    {
      name: 'the same request again, already created: no write',
      parent: parent({ spawnRequests: [asked('lead-a')], children: { active: 1, succeeded: 0, failed: 0, agents: [{ name: 'lead-a', uid: 'x' }] } }),
      input: ask('a'),
      expect: (r) => assert.deepEqual(r, { name: 'lead-a', requestTime: T1 }),
    },
    {
      name: 'the same request again after a refusal: a new request time (judged afresh)',
      parent: parent({
        spawnRequests: [asked('lead-a')],
        children: { active: 0, succeeded: 0, failed: 0, refused: [{ name: 'lead-a', requestTime: T1, field: 'spec.children.maxConcurrent', message: 'm' }] },
      }),
      input: ask('a'),
      expect: (r) => assert.deepEqual(r, { name: 'lead-a', requestTime: T2, write: [asked('lead-a', T2)] }),
    },
    {
      name: 'asked again after a refusal within the same instant: still a later request time',
      parent: parent({
        spawnRequests: [asked('lead-a', T2)],
        children: { active: 0, succeeded: 0, failed: 0, refused: [{ name: 'lead-a', requestTime: T2, field: 'spec.children.maxConcurrent', message: 'm' }] },
      }),
      input: ask('a'),
      expect: (r) => assert.deepEqual(r, { name: 'lead-a', requestTime: '2026-11-25T10:00:02.001Z', write: [asked('lead-a', '2026-11-25T10:00:02.001Z')] }),
    },
    {
      name: 'the same name with another spec: refused, naming name',
      parent: parent({ spawnRequests: [asked('lead-a')] }),
      input: ask('a', 'something else'),
      expect: (r) => assert.match('refused' in r ? r.refused.message : '', /^name: a child named 'lead-a' was already requested with a different spec/),
    },
    {
      name: 'a name too long once prefixed: refused with the length',
      parent: parent({}, 'x'.repeat(60)),
      input: ask('abcd'),
      expect: (r) => assert.deepEqual('refused' in r && [r.refused.status, /would be 65 characters, over 63/.test(r.refused.message)], [422, true]),
    },
    {
      name: 'too many requests: refused',
      parent: parent({ spawnRequests: Array.from({ length: LIMITS.spawnRequests }, (_, i) => asked(`lead-${i}`)) }),
      input: ask('z'),
      expect: (r) => assert.match('refused' in r ? r.refused.message : '', /^status\.spawnRequests: /),
    },
  ];
  for (const c of cases) it(c.name, () => c.expect(intakeSpawn(c.parent, c.input, T2)));
});

describe('intakeStop', () => {
  const withChild = parent({ children: { active: 1, succeeded: 0, failed: 0, agents: [{ name: 'lead-a', uid: 'x' }] } });
  it('a child: recorded with its reason', () => {
    assert.deepEqual(intakeStop(withChild, { name: 'a', reason: 'enough' }, T1), { name: 'lead-a', write: [{ name: 'lead-a', requestTime: T1, reason: 'enough' }] });
  });
  it('asked twice: recorded once', () => {
    const again = parent({ ...withChild.status, stopRequests: [{ name: 'lead-a', requestTime: T1 }] });
    assert.deepEqual(intakeStop(again, { name: 'lead-a' }, T2), { name: 'lead-a' });
  });
  it('not a child: 404 listing the children', () => {
    const r = intakeStop(withChild, { name: 'other' }, T1);
    assert.deepEqual('refused' in r && r.refused, { status: 404, message: "name: 'other' is not a child of lead (its children: lead-a)" });
  });
});

describe('childrenAnswer', () => {
  it('counts, children, refusals and the requests not answered yet', () => {
    const p = parent({
      spawnRequests: [asked('lead-a'), asked('lead-b'), asked('lead-c')],
      children: { active: 1, succeeded: 0, failed: 0, agents: [{ name: 'lead-a' }], refused: [{ name: 'lead-b', requestTime: T1, field: 'f', message: 'm' }] },
    });
    const a = childrenAnswer(p);
    assert.deepEqual([a.active, a.children.map((c) => c.name), a.refused.map((r) => r.name), a.pending], [1, ['lead-a'], ['lead-b'], ['lead-c']]);
  });
});

describe('tailLines', () => {
  const cases: { name: string; text: string; tail: number; grep?: string; cut: boolean; expect: string[] }[] = [
    { name: 'the last n lines', text: 'a\nb\nc\n', tail: 2, cut: false, expect: ['b', 'c'] },
    { name: 'only lines containing the text (plain, not a pattern)', text: 'x.y\nxzy\nx.y again\n', tail: 10, grep: 'x.y', cut: false, expect: ['x.y', 'x.y again'] },
    { name: 'a read that starts mid-line drops the partial first line', text: 'tial\nwhole\n', tail: 10, cut: true, expect: ['whole'] },
    { name: 'no trailing newline: the last line counts', text: 'a\nb', tail: 1, cut: false, expect: ['b'] },
  ];
  for (const c of cases) it(c.name, () => assert.deepEqual(tailLines(c.text, c.tail, c.grep, c.cut), c.expect));
});

describe('childAgentName', () => {
  it('prefixes with the parent unless already prefixed', () => {
    assert.deepEqual([childAgentName('p', 'a'), childAgentName('p', 'p-a')], ['p-a', 'p-a']);
  });
});
