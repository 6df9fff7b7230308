/** crds/ is generated from src/api; this fails when someone changed one without the other. */
import assert from 'node:assert/strict';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { CRD_FILES, renderCrd } from '../../src/api/crd.js';
import { CRDS_DIR } from '../../src/dev/paths.js';

test('every generated CRD is committed in crds/ exactly as src/api renders it now', async () => {
  for (const [file, make] of Object.entries(CRD_FILES)) {
    const committed = await readFile(join(CRDS_DIR, file), 'utf8').catch(() => '');
    assert.ok(committed, `crds/${file} is missing: run 'npm run gen:crds'`);
    assert.equal(committed, renderCrd(make()), `crds/${file} differs from src/api: run 'npm run gen:crds' and commit the result`);
  }
});

test('crds/ holds no CRD that src/api does not generate', async () => {
  const files = (await readdir(CRDS_DIR)).filter((f) => f.endsWith('.yaml')).sort();
  assert.deepEqual(files, Object.keys(CRD_FILES).sort());
});
