import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { expandArgs, expandEnv, expandString } from '../../src/sidecar/runtime/expand.js';

const env = { A: 'alpha', B: 'b e t a', EMPTY: '', DOLLAR: '$(A)' };

describe('expandArgs (Kubernetes $(VAR) semantics)', () => {
  const cases: [string, string][] = [
    ['plain', 'plain'],
    ['$(A)', 'alpha'],
    ['x$(A)y', 'xalphay'],
    ['$(A)$(B)', 'alphab e t a'],
    ['$(EMPTY)', ''],
    ['$(UNDEFINED)', '$(UNDEFINED)'],
    ['a$(UNDEFINED)b$(A)', 'a$(UNDEFINED)balpha'],
    ['$$(A)', '$(A)'],
    ['$$$(A)', '$alpha'],
    ['$$$$(A)', '$$(A)'],
    ['$$', '$'],
    ['$', '$'],
    ['a$', 'a$'],
    ['$A', '$A'],
    ['${A}', '${A}'],
    ['$(A', '$(A'],
    ['$(', '$('],
    ['$()', '$()'],
    ['$(A)$', 'alpha$'],
    ['$(DOLLAR)', '$(A)'], // a value is not expanded again
    ['$(A))', 'alpha)'],
    ['$((A))', '$((A))'],
    ['ü$(A)ü', 'üalphaü'],
    ['$ü', '$ü'],
    ['$(A B)', '$(A B)'],
  ];
  for (const [input, want] of cases) {
    it(`${JSON.stringify(input)} -> ${JSON.stringify(want)}`, () => {
      assert.deepEqual(expandArgs([input], env), [want]);
    });
  }

  it('expands every argument independently and leaves the input untouched', () => {
    const args = ['$(A)', '--flag=$(B)', '$$(A)'];
    assert.deepEqual(expandArgs(args, env), ['alpha', '--flag=b e t a', '$(A)']);
    assert.deepEqual(args, ['$(A)', '--flag=$(B)', '$$(A)']);
  });

  it('does not treat inherited object properties as variables', () => {
    assert.equal(
      expandString('$(toString)', (n) => (Object.prototype.hasOwnProperty.call(env, n) ? 'x' : undefined)),
      '$(toString)',
    );
    assert.deepEqual(expandArgs(['$(toString)', '$(__proto__)'], env), ['$(toString)', '$(__proto__)']);
  });
});

describe('expandEnv (earlier entries only, like the kubelet)', () => {
  const cases: { name: string; entries: Parameters<typeof expandEnv>[0]; base?: Record<string, string>; want: Record<string, string> }[] = [
    { name: 'literal values', entries: [{ name: 'X', value: 'x' }], want: { X: 'x' } },
    {
      name: 'reference to an earlier entry',
      entries: [
        { name: 'X', value: 'x' },
        { name: 'Y', value: '$(X)-y' },
      ],
      want: { X: 'x', Y: 'x-y' },
    },
    {
      name: 'a later entry is not visible',
      entries: [
        { name: 'Y', value: '$(X)-y' },
        { name: 'X', value: 'x' },
      ],
      want: { Y: '$(X)-y', X: 'x' },
    },
    { name: 'a self reference is not defined yet', entries: [{ name: 'X', value: '$(X)' }], want: { X: '$(X)' } },
    { name: 'base variables (the platform AGENT_*)', entries: [{ name: 'P', value: '--prompt=$(AGENT_PROMPT_FILE)' }], base: { AGENT_PROMPT_FILE: '/w/prompt' }, want: { P: '--prompt=/w/prompt' } },
    {
      name: 'escape',
      entries: [
        { name: 'X', value: 'x' },
        { name: 'Y', value: '$$(X)' },
      ],
      want: { X: 'x', Y: '$(X)' },
    },
    {
      name: 'a valueFrom value is taken verbatim',
      entries: [
        { name: 'X', value: 'x' },
        { name: 'S', value: '$(X) $$', expand: false },
      ],
      want: { X: 'x', S: '$(X) $$' },
    },
    {
      name: 'chains use expanded values',
      entries: [
        { name: 'A', value: 'a' },
        { name: 'B', value: '$(A)b' },
        { name: 'C', value: '$(B)c' },
      ],
      want: { A: 'a', B: 'ab', C: 'abc' },
    },
    {
      name: 'a redefinition replaces the earlier value',
      entries: [
        { name: 'A', value: '1' },
        { name: 'A', value: '$(A)2' },
      ],
      want: { A: '12' },
    },
    { name: 'an entry may shadow a base variable', entries: [{ name: 'HOME', value: '$(HOME)/x' }], base: { HOME: '/h' }, want: { HOME: '/h/x' } },
  ];
  for (const c of cases) {
    it(c.name, () => {
      assert.deepEqual(expandEnv(c.entries, c.base), c.want);
    });
  }

  it('keeps definition order', () => {
    assert.deepEqual(
      Object.keys(
        expandEnv([
          { name: 'Z', value: '' },
          { name: 'A', value: '' },
          { name: 'M', value: '' },
        ]),
      ),
      ['Z', 'A', 'M'],
    );
  });
});
