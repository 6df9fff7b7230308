/** Applies the generated CRDs (crds/*.yaml) and waits until the API server serves them. */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { isDeepStrictEqual } from 'node:util';
import { ApiextensionsV1Api, KubeConfig, type V1CustomResourceDefinition } from '@kubernetes/client-node';
// Not re-exported by the package root; needed to turn plain YAML into the typed model (see toModel).
import { ObjectSerializer } from '@kubernetes/client-node/dist/gen/models/ObjectSerializer.js';
import { parseAllDocuments } from 'yaml';
import { apiErrorCode, apiErrorMessage } from './apiErrors.js';
import { CRDS_DIR } from './paths.js';

export interface InstallCrdsOptions {
  dir?: string;
  timeoutMs?: number;
}

function kubeConfigOf(kc: KubeConfig | string): KubeConfig {
  if (typeof kc !== 'string') return kc;
  const loaded = new KubeConfig();
  loaded.loadFromFile(kc);
  return loaded;
}

const CRD_TYPE = 'V1CustomResourceDefinition';

/**
 * The typed APIs serialize a body by the model's property names (`x_kubernetes_validations`,
 * `_enum`) and silently drop everything else: a CRD parsed from YAML would lose its CEL rules,
 * enums and list types. Converting to the model first keeps them; the round trip is checked so a
 * future client version cannot drop fields unnoticed.
 */
export function toModel(crd: unknown): V1CustomResourceDefinition {
  const model = ObjectSerializer.deserialize(crd, CRD_TYPE, '') as V1CustomResourceDefinition;
  const wire = JSON.parse(JSON.stringify(ObjectSerializer.serialize(model, CRD_TYPE, ''))) as unknown;
  if (!isDeepStrictEqual(wire, crd)) {
    throw new Error(`CRD ${(crd as V1CustomResourceDefinition).metadata?.name}: the client library would not send it unchanged`);
  }
  return model;
}

export async function readCrds(dir = CRDS_DIR): Promise<V1CustomResourceDefinition[]> {
  const files = (await readdir(dir)).filter((f) => f.endsWith('.yaml') || f.endsWith('.yml')).sort();
  const crds: V1CustomResourceDefinition[] = [];
  for (const f of files) {
    for (const doc of parseAllDocuments(await readFile(join(dir, f), 'utf8'))) {
      if (doc.errors.length > 0) throw new Error(`${f}: ${doc.errors[0]!.message}`);
      const obj = doc.toJS() as V1CustomResourceDefinition | null;
      if (obj?.kind === 'CustomResourceDefinition') crds.push(toModel(obj));
    }
  }
  if (crds.length === 0) throw new Error(`no CustomResourceDefinition in ${dir}`);
  return crds;
}

/** Creates or replaces each CRD, then waits until all are Established. Returns their names. */
export async function installCrds(kc: KubeConfig | string, opts: InstallCrdsOptions = {}): Promise<string[]> {
  const api = kubeConfigOf(kc).makeApiClient(ApiextensionsV1Api);
  const crds = await readCrds(opts.dir);
  const names: string[] = [];
  for (const crd of crds) {
    const name = crd.metadata!.name!;
    names.push(name);
    try {
      try {
        await api.createCustomResourceDefinition({ body: crd, fieldValidation: 'Strict' });
      } catch (err) {
        if (apiErrorCode(err) !== 409) throw err;
        const existing = await api.readCustomResourceDefinition({ name });
        const body = { ...crd, metadata: { ...crd.metadata, resourceVersion: existing.metadata?.resourceVersion } };
        await api.replaceCustomResourceDefinition({ name, body, fieldValidation: 'Strict' });
      }
    } catch (err) {
      throw new Error(`the API server rejected CRD ${name}: ${apiErrorMessage(err)}`);
    }
  }
  const deadline = Date.now() + (opts.timeoutMs ?? 60_000);
  for (const name of names) {
    for (;;) {
      const crd = await api.readCustomResourceDefinition({ name });
      const cond = (type: string) => crd.status?.conditions?.find((c) => c.type === type);
      if (cond('Established')?.status === 'True') break;
      if (cond('NamesAccepted')?.status === 'False') {
        throw new Error(`CRD ${name}: names not accepted: ${cond('NamesAccepted')?.message ?? ''}`);
      }
      if (Date.now() > deadline) throw new Error(`CRD ${name} not Established in time: ${JSON.stringify(crd.status?.conditions ?? [])}`);
      await sleep(100);
    }
  }
  return names;
}
