import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AgentSpec } from '../../src/api/agent.js';
import type { NodeView } from '../../src/controller/nodes.js';
import { nodePoolOf, poolConflict, schedule, type NodePool } from '../../src/controller/scheduler.js';

const node = (name: string, labels: Record<string, string>, over: Partial<NodeView> = {}): NodeView => ({ name, labels, ready: true, unschedulable: false, capacity: 2, ...over });
const spec = (over: Partial<AgentSpec> = {}): AgentSpec => ({ prompt: 'p', command: ['true'], ...over });
const NODES = [node('a1', { pool: 'a' }), node('a2', { pool: 'a', gpu: 'yes' }), node('b1', { pool: 'b' }), node('free', {})];
const poolA = nodePoolOf('team-a', { metadata: { annotations: { 'orchestrator.dev/node-selector': 'pool=a' } } });

describe('nodePoolOf', () => {
  const cases: { name: string; ns: Parameters<typeof nodePoolOf>[1]; expect: (p: NodePool | undefined) => void }[] = [
    { name: 'no annotation: no pool', ns: { metadata: { annotations: { other: 'x' } } }, expect: (p) => assert.equal(p, undefined) },
    {
      name: 'k=v,k2=v2: the selector',
      ns: { metadata: { annotations: { 'orchestrator.dev/node-selector': 'pool=a, zone=z1' } } },
      expect: (p) => assert.deepEqual(p?.selector, { pool: 'a', zone: 'z1' }),
    },
    { name: 'empty text: an empty selector (every node)', ns: { metadata: { annotations: { 'orchestrator.dev/node-selector': '' } } }, expect: (p) => assert.deepEqual(p?.selector, {}) },
    {
      name: 'not a selector: blocked, naming the annotation and the namespace',
      ns: { metadata: { annotations: { 'orchestrator.dev/node-selector': 'pool=a b' } } },
      expect: (p) => {
        assert.equal(p?.selector, undefined);
        assert.match(p?.blocked ?? '', /annotation orchestrator\.dev\/node-selector="pool=a b" on namespace team-a is not a valid selector \("a b" is not a valid label value/);
      },
    },
    { name: 'namespace not seen yet: blocked (fail closed)', ns: undefined, expect: (p) => assert.match(p?.blocked ?? '', /namespace team-a is not in the controller's cache yet/) },
  ];
  for (const c of cases) it(c.name, () => c.expect(nodePoolOf('team-a', c.ns)));
});

describe('schedule with a node pool', () => {
  const cases: { name: string; spec: AgentSpec; pool?: NodePool; used?: [string, number][]; nodesOver?: Record<string, Partial<NodeView>>; expect: ReturnType<typeof schedule> }[] = [
    {
      name: 'no pool: any node, least loaded',
      spec: spec(),
      used: [
        ['a1', 1],
        ['a2', 1],
        ['b1', 1],
      ],
      expect: { node: 'free' },
    },
    {
      name: 'pool: never outside it, however free the rest',
      spec: spec(),
      pool: poolA,
      used: [
        ['a1', 1],
        ['a2', 1],
      ],
      expect: { node: 'a1' },
    },
    { name: 'pool and nodeSelector together', spec: spec({ nodeSelector: { gpu: 'yes' } }), pool: poolA, expect: { node: 'a2' } },
    {
      name: 'pool full: Pending, saying how many nodes are outside it',
      spec: spec(),
      pool: poolA,
      used: [
        ['a1', 2],
        ['a2', 2],
      ],
      expect: { unschedulable: "0/4 nodes are available: 2 at capacity, 2 outside the namespace's node pool (orchestrator.dev/node-selector)", queued: true },
    },
    { name: 'blocked pool: no node at all', spec: spec(), pool: { namespace: 'x', blocked: 'why' }, expect: { unschedulable: 'why', queued: false } },
    {
      name: 'pool nodes not ready, free nodes outside: not queued (it waits for the pool, not for a slot)',
      spec: spec(),
      pool: poolA,
      nodesOver: { a1: { ready: false }, a2: { ready: false } },
      expect: { unschedulable: "0/4 nodes are available: 2 not ready, 2 outside the namespace's node pool (orchestrator.dev/node-selector)", queued: false },
    },
  ];
  for (const c of cases) {
    const nodes = NODES.map((n) => ({ ...n, ...c.nodesOver?.[n.name] }));
    it(c.name, () => assert.deepEqual(schedule(c.spec, nodes, new Map(c.used ?? []), c.pool), c.expect));
  }
});

describe('poolConflict', () => {
  const cases: { name: string; spec: AgentSpec; pool?: NodePool; expect?: RegExp }[] = [
    { name: 'no pool: none', spec: spec({ nodeSelector: { pool: 'b' } }) },
    { name: 'a selector on other keys: none', spec: spec({ nodeSelector: { gpu: 'yes' } }), pool: poolA },
    { name: 'the same value: none', spec: spec({ nodeSelector: { pool: 'a' } }), pool: poolA },
    {
      name: 'another value of a key the pool fixes',
      spec: spec({ nodeSelector: { pool: 'b' } }),
      pool: poolA,
      expect: /spec\.nodeSelector pool=b contradicts .*orchestrator\.dev\/node-selector="pool=a" on namespace team-a requires pool=a/,
    },
    { name: 'nodeName of a node outside the pool', spec: spec({ nodeName: 'b1' }), pool: poolA, expect: /spec\.nodeName b1 is outside the node pool/ },
    { name: 'nodeName of a node inside the pool: none', spec: spec({ nodeName: 'a2' }), pool: poolA },
    { name: 'nodeName of no node: none here (the scheduler says it does not exist)', spec: spec({ nodeName: 'nope' }), pool: poolA },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const got = poolConflict(c.spec, NODES, c.pool);
      if (c.expect) assert.match(got ?? '', c.expect);
      else assert.equal(got, undefined);
    });
  }
});
