import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { REFERENCES_CLUSTER_ROLE } from '../../src/api/constants.js';
import { optInCommand, referencesRoleBinding } from '../../src/api/references.js';
import { PACKAGE_ROOT } from '../../src/dev/paths.js';
import { BASE_DIR, baseObjects, readKustomization } from '../support/deployManifests.js';

describe('the namespace opt-in to Secret and ConfigMap reads', () => {
  const objects = baseObjects();

  it('binds the ClusterRole deploy/ ships, for the ServiceAccount deploy/ gives the sidecars', () => {
    const rb = referencesRoleBinding('team-a');
    assert.ok(objects.some((o) => o.kind === 'ClusterRole' && o.metadata.name === rb.roleRef.name && rb.roleRef.name === REFERENCES_CLUSTER_ROLE));
    const [sa] = rb.subjects;
    assert.equal(readKustomization(BASE_DIR).namespace, sa!.namespace);
    assert.ok(objects.some((o) => o.kind === 'ServiceAccount' && o.metadata.name === sa!.name));
    assert.ok(!objects.some((o) => /RoleBinding$/.test(o.kind) && (o as unknown as { roleRef: { name: string } }).roleRef.name === REFERENCES_CLUSTER_ROLE), 'deploy/ binds it nowhere');
  });

  it('is the one command the README shows', () => {
    assert.ok(readFileSync(join(PACKAGE_ROOT, 'README.md'), 'utf8').includes(optInCommand('team-a')));
  });
});
