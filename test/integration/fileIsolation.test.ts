/**
 * The runner's file-isolation check (test/support/fileIsolation.ts), tried on a test file that
 * leaks: run as `npm test` runs each integration file, it must fail that file, name what it left,
 * and remove it so the files after it start from a clean cluster.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { execa } from 'execa';
import { kubeConfig, uniqueSuffix } from '../support/cluster.js';
import { listLeftovers } from '../support/leftovers.js';

const SUPPORT = fileURLToPath(new URL('../support/', import.meta.url));

describe('the file-isolation check', () => {
  it('fails a file that leaves a namespace and an AgentNode behind, names both, and removes them', async (t) => {
    // Inside the build, so the fixture resolves the project's node_modules as the test files do.
    const dir = await mkdtemp(join(SUPPORT, '..', '.isolation-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const leak = `leak-${uniqueSuffix()}`;
    const fixture = join(dir, 'leaky.test.mjs');
    await writeFile(
      fixture,
      `import { it } from 'node:test';
import { CoreV1Api } from '@kubernetes/client-node';
import { kubeConfig } from ${JSON.stringify(pathToFileURL(join(SUPPORT, 'cluster.js')).href)};
import { agentNodeClient } from ${JSON.stringify(pathToFileURL(join(SUPPORT, '..', '..', 'src', 'kube', 'resources.js')).href)};
it('creates and forgets', async () => {
  const kc = kubeConfig();
  await kc.makeApiClient(CoreV1Api).createNamespace({ body: { metadata: { name: ${JSON.stringify(leak)} } } });
  await agentNodeClient(kc).create({ metadata: { name: ${JSON.stringify(leak)} } });
});
`,
    );
    const r = await execa(process.execPath, ['--test', '--import', pathToFileURL(join(SUPPORT, 'fileIsolation.js')).href, fixture], {
      reject: false,
      timeout: 180_000,
      all: true,
      // Without NODE_TEST_CONTEXT the child is a test run of its own, not a subprocess of this one.
      env: { ...process.env, NODE_TEST_CONTEXT: undefined, AO_LEFTOVER_SETTLE_MS: '3000' },
    });
    assert.notEqual(r.exitCode, 0, `the leaking file passed:\n${r.all}`);
    assert.match(r.all ?? '', /leaky\.test\.mjs left 2 object\(s\) behind/);
    assert.match(r.all ?? '', new RegExp(`Namespace ${leak} \\(`));
    assert.match(r.all ?? '', new RegExp(`AgentNode ${leak} \\(not deleted\\)`));
    assert.match(r.all ?? '', /removed them by force/);
    const left = await listLeftovers(kubeConfig());
    assert.deepEqual(
      left.filter((l) => l.name === leak),
      [],
      'the check removed what the file left',
    );
  });
});
