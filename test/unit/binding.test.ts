import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Agent } from '../../src/api/agent.js';
import { NODE_LABEL } from '../../src/api/constants.js';
import { bindingOf, type Binding } from '../../src/controller/binding.js';

const agent = (label: string | undefined, nodeName: string | undefined): Agent => ({
  metadata: { name: 'a', namespace: 'ns', ...(label !== undefined ? { labels: { [NODE_LABEL]: label } } : {}) },
  spec: { prompt: 'p', command: ['true'] },
  ...(nodeName !== undefined ? { status: { nodeName } } : {}),
});

describe('bindingOf: the label is the record, status.nodeName a copy', () => {
  const cases: { name: string; label?: string; nodeName?: string; node?: string; mismatch?: RegExp }[] = [
    { name: 'unbound: neither', node: undefined },
    { name: 'bound: both agree', label: 'n1', nodeName: 'n1', node: 'n1' },
    { name: 'label written, copy not yet (crash between the writes): bound', label: 'n1', node: 'n1' },
    { name: 'copy says another node (a node rewrote it): the label wins', label: 'n1', nodeName: 'n2', node: 'n1', mismatch: /says n2, but the Agent is bound to n1/ },
    { name: 'copy without a label (a node claimed an unbound Agent): not bound', nodeName: 'n2', node: undefined, mismatch: /says n2, but the controller never bound/ },
    { name: 'an empty label is no binding', label: '', node: undefined },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const b: Binding = bindingOf(agent(c.label, c.nodeName));
      assert.equal(b.node, c.node);
      if (c.mismatch) assert.match(b.mismatch ?? '', c.mismatch);
      else assert.equal(b.mismatch, undefined);
    });
  }
});
