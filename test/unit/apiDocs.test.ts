import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { it } from 'node:test';
import { renderApiDocs } from '../../src/api/docs.js';

it('docs/api.md is what src/api generates (run `npm run gen:crds` after changing the API)', () => {
  const committed = readFileSync(new URL('../../../docs/api.md', import.meta.url), 'utf8');
  assert.equal(committed, renderApiDocs());
});

it('the reference lists every spec field with its description', () => {
  const doc = renderApiDocs();
  for (const f of [
    'spec.prompt',
    'spec.promptFrom.secretKeyRef.key',
    'spec.command',
    'spec.env[].valueFrom',
    'spec.cleanup.gracePeriodSeconds',
    'status.cleanup.escalatedToSigkill',
    'status.conditions[].type',
  ]) {
    assert.ok(doc.includes(`| \`${f}\` |`), `${f} missing`);
  }
  assert.match(doc, /exactly one of spec\.prompt or spec\.promptFrom must be set/);
});
