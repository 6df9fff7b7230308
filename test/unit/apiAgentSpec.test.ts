import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { validateSpec } from '../../src/api/agent.js';
import { LIMITS } from '../../src/api/constants.js';

const command = ['claude', '-p', '$(AGENT_PROMPT_FILE)'];

/** How the controller's validation judges the prompt fields; `error` is a fragment of the message, which must name the field. */
const CASES: { name: string; spec: Record<string, unknown>; error?: RegExp }[] = [
  { name: 'a one-character inline prompt', spec: { prompt: 'x', command } },
  { name: 'an inline prompt at the size limit', spec: { prompt: 'x'.repeat(LIMITS.promptBytes), command } },
  { name: 'a prompt from a ConfigMap key', spec: { promptFrom: { configMapKeyRef: { name: 'prompts', key: 'fix.md' } }, command } },
  { name: 'an empty inline prompt', spec: { prompt: '', command }, error: /^spec\.prompt: must not be empty$/ },
  { name: 'an empty inline prompt beside promptFrom', spec: { prompt: '', promptFrom: { secretKeyRef: { name: 's', key: 'k' } }, command }, error: /spec\.prompt: must not be empty/ },
  { name: 'an inline prompt over the size limit', spec: { prompt: 'x'.repeat(LIMITS.promptBytes + 1), command }, error: /^spec\.prompt: / },
  { name: 'neither prompt nor promptFrom', spec: { command }, error: /spec\.prompt or spec\.promptFrom/ },
];

describe('validateSpec: the prompt', () => {
  for (const c of CASES) {
    it(c.name, () => {
      const v = validateSpec(c.spec);
      if (!c.error) return assert.deepEqual(v, { ok: true, value: c.spec });
      assert.equal(v.ok, false, 'should be refused');
      if (!v.ok) assert.match(v.message, c.error);
    });
  }
});
