/** `npm run gen:crds`: writes crds/*.yaml and docs/api.md from the zod schemas. */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CRD_FILES, renderCrd } from './crd.js';
import { renderApiDocs } from './docs.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const dir = join(root, 'crds');
mkdirSync(dir, { recursive: true });
for (const [file, make] of Object.entries(CRD_FILES)) {
  writeFileSync(join(dir, file), renderCrd(make()));
  console.log(`wrote crds/${file}`);
}
mkdirSync(join(root, 'docs'), { recursive: true });
writeFileSync(join(root, 'docs', 'api.md'), renderApiDocs());
console.log('wrote docs/api.md');
