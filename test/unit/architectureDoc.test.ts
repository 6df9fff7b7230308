/** docs/architecture.md stays a true map: every file it names exists, every identifier it names is in the code. */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { PACKAGE_ROOT } from '../../src/dev/paths.js';

const doc = readFileSync(join(PACKAGE_ROOT, 'docs', 'architecture.md'), 'utf8');
const code = (['src', 'test', 'bench'] as const)
  .flatMap((dir) => readdirSync(join(PACKAGE_ROOT, dir), { recursive: true, encoding: 'utf8' }).map((f) => join(PACKAGE_ROOT, dir, f)))
  .filter((f) => f.endsWith('.ts'))
  .map((f) => readFileSync(f, 'utf8'))
  .join('\n');
const quoted = [...doc.matchAll(/`([^`\n]+)`/g)].map((m) => m[1]!);

test('every path docs/architecture.md names exists', () => {
  const paths = [...new Set(quoted.filter((q) => /^(src|test|bench|crds|deploy|docs)\/[\w./-]*$/.test(q)))];
  assert.ok(paths.length >= 30, `found only ${paths.length} paths`);
  assert.deepEqual(
    paths.filter((p) => !existsSync(join(PACKAGE_ROOT, p))),
    [],
  );
});

test('every identifier docs/architecture.md names still occurs in the code (a rename leaves none behind)', () => {
  // `name`, `Class.method`, `status.field`: identifiers in mixed case, not flags, file names or prose.
  const names = [...new Set(quoted.filter((q) => /^[A-Za-z]\w*(\.[A-Za-z]\w*)*$/.test(q) && /[a-z][A-Z]/.test(q) && !q.endsWith('.ts')))];
  assert.ok(names.length >= 60, `found only ${names.length} names`);
  const occurs = (name: string) => name.split('.').every((part) => new RegExp(`\\b${part}\\b`).test(code));
  assert.deepEqual(
    names.filter((n) => !occurs(n)),
    [],
  );
});
