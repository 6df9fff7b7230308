import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { applyMergePatch, diffStatus, jsonEqual, mergePatchDiff } from '../../src/kube/mergePatch.js';

type Obj = Record<string, unknown>;

describe('mergePatchDiff', () => {
  const cases: { name: string; from: Obj | undefined; to: Obj; patch: Obj | undefined }[] = [
    { name: 'equal: no patch', from: { a: 1, b: { c: 'x' } }, to: { a: 1, b: { c: 'x' } }, patch: undefined },
    { name: 'undefined members do not count', from: { a: 1 }, to: { a: 1, b: undefined }, patch: undefined },
    { name: 'from undefined, empty to: no patch', from: undefined, to: {}, patch: undefined },
    { name: 'changed scalar', from: { phase: 'Pending' }, to: { phase: 'Running' }, patch: { phase: 'Running' } },
    { name: 'new field', from: {}, to: { progress: 40 }, patch: { progress: 40 } },
    { name: 'removed field: null', from: { message: 'x', phase: 'P' }, to: { phase: 'P' }, patch: { message: null } },
    { name: 'field set to undefined: null', from: { message: 'x' }, to: { message: undefined }, patch: { message: null } },
    { name: 'field set to null: null', from: { message: 'x' }, to: { message: null }, patch: { message: null } },
    { name: 'absent in both: nothing', from: {}, to: { message: null }, patch: undefined },
    {
      name: 'nested objects merge key by key',
      from: { cleanup: { sessionKilled: false, promptDeleted: true } },
      to: { cleanup: { sessionKilled: true, promptDeleted: true } },
      patch: { cleanup: { sessionKilled: true } },
    },
    { name: 'nested removal', from: { f: { total: 1, bySeverity: { high: 1 } } }, to: { f: { total: 1 } }, patch: { f: { bySeverity: null } } },
    {
      name: 'lists are replaced whole',
      from: {
        conditions: [
          { type: 'A', status: 'True' },
          { type: 'B', status: 'False' },
        ],
      },
      to: {
        conditions: [
          { type: 'A', status: 'True' },
          { type: 'B', status: 'True' },
        ],
      },
      patch: {
        conditions: [
          { type: 'A', status: 'True' },
          { type: 'B', status: 'True' },
        ],
      },
    },
    { name: 'equal lists: nothing', from: { l: [1, 2] }, to: { l: [1, 2] }, patch: undefined },
    { name: 'object replacing a scalar', from: { x: 1 }, to: { x: { y: 2 } }, patch: { x: { y: 2 } } },
    { name: 'new object value is pruned of absent members', from: {}, to: { x: { y: 2, z: undefined, w: null } }, patch: { x: { y: 2 } } },
    { name: 'scalar replacing an object', from: { x: { y: 2 } }, to: { x: 3 }, patch: { x: 3 } },
    { name: 'zero and false are values, not absence', from: { n: 1, b: true }, to: { n: 0, b: false }, patch: { n: 0, b: false } },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const patch = mergePatchDiff(c.from, c.to);
      assert.deepEqual(patch, c.patch);
      // Whatever the patch, applying it must produce `to` (as JSON sees it).
      const result = patch ? applyMergePatch(c.from ?? {}, patch) : (c.from ?? {});
      assert.ok(jsonEqual(result, c.to), `applying ${JSON.stringify(patch)} to ${JSON.stringify(c.from)} gives ${JSON.stringify(result)}`);
    });
  }
});

describe('diffStatus', () => {
  it('returns undefined when nothing changes, so callers skip the write', () => {
    const status = { phase: 'Running', conditions: [{ type: 'Running', status: 'True' }] };
    assert.equal(diffStatus(status, structuredClone(status)), undefined);
  });
  it('no observed status: the whole desired status', () => {
    assert.deepEqual(diffStatus(undefined, { phase: 'Pending', reason: 'Created' }), { phase: 'Pending', reason: 'Created' });
  });
  it('leaves fields that are absent on both sides alone (another writer may own them)', () => {
    const patch = diffStatus({ phase: 'Scheduled' }, { phase: 'Running' });
    assert.deepEqual(patch, { phase: 'Running' });
    assert.deepEqual(applyMergePatch({ phase: 'Scheduled', sessionName: 's' }, patch), { phase: 'Running', sessionName: 's' });
  });
});

describe('applyMergePatch (RFC 7386 examples)', () => {
  const cases: { target: unknown; patch: unknown; result: unknown }[] = [
    { target: { a: 'b' }, patch: { a: 'c' }, result: { a: 'c' } },
    { target: { a: 'b' }, patch: { b: 'c' }, result: { a: 'b', b: 'c' } },
    { target: { a: 'b' }, patch: { a: null }, result: {} },
    { target: { a: 'b', b: 'c' }, patch: { a: null }, result: { b: 'c' } },
    { target: { a: ['b'] }, patch: { a: 'c' }, result: { a: 'c' } },
    { target: { a: 'c' }, patch: { a: ['b'] }, result: { a: ['b'] } },
    { target: { a: { b: 'c' } }, patch: { a: { b: 'd', c: null } }, result: { a: { b: 'd' } } },
    { target: { a: [{ b: 'c' }] }, patch: { a: [1] }, result: { a: [1] } },
    { target: ['a', 'b'], patch: ['c', 'd'], result: ['c', 'd'] },
    { target: { a: 'b' }, patch: ['c'], result: ['c'] },
    { target: { e: null }, patch: { a: 1 }, result: { e: null, a: 1 } },
    { target: [1, 2], patch: { a: 'b', c: null }, result: { a: 'b' } },
    { target: {}, patch: { a: { bb: { ccc: null } } }, result: { a: { bb: {} } } },
  ];
  for (const c of cases) {
    it(`${JSON.stringify(c.target)} + ${JSON.stringify(c.patch)}`, () => {
      assert.deepEqual(applyMergePatch(c.target, c.patch), c.result);
    });
  }
});
