/** `npm run gen:crds`: writes crds/*.yaml from the zod schemas. */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CRD_FILES, renderCrd } from './crd.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const dir = join(root, 'crds');
mkdirSync(dir, { recursive: true });
for (const [file, make] of Object.entries(CRD_FILES)) {
  writeFileSync(join(dir, file), renderCrd(make()));
  console.log(`wrote crds/${file}`);
}
