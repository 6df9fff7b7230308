/**
 * Resolves what an Agent's spec points at (the prompt and env values in ConfigMaps and Secrets) into
 * the bytes the session gets. Errors name the field and the object, and end in a launch error.
 */
import { CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import type { AgentSpec, EnvVar } from '../api/agent.js';
import type { KeySelector } from '../api/fields.js';
import { optInCommand, REFERENCES_ROLE_BINDING } from '../api/references.js';
import { callOptions } from '../kube/client.js';
import { isNotFound, statusCode } from '../kube/errors.js';
import type { EnvEntry } from './runtime/expand.js';

export class ResolveError extends Error {}

export interface Resolved {
  prompt: Buffer;
  env: EnvEntry[];
}

type Ref = { kind: 'ConfigMap' | 'Secret'; ref: KeySelector; field: string };

export class SpecResolver {
  private readonly core: CoreV1Api;

  constructor(
    kc: KubeConfig,
    private readonly timeoutMs = 10_000,
  ) {
    this.core = kc.makeApiClient(CoreV1Api);
  }

  async resolve(namespace: string, spec: AgentSpec): Promise<Resolved> {
    const prompt = await this.prompt(namespace, spec);
    const env: EnvEntry[] = [];
    for (const [i, e] of (spec.env ?? []).entries()) env.push(await this.envEntry(namespace, e, `spec.env[${i}]`));
    return { prompt, env };
  }

  private async prompt(namespace: string, spec: AgentSpec): Promise<Buffer> {
    if (spec.prompt !== undefined) return Buffer.from(spec.prompt, 'utf8');
    const from = spec.promptFrom;
    const ref: Ref | undefined = from?.configMapKeyRef
      ? { kind: 'ConfigMap', ref: from.configMapKeyRef, field: 'spec.promptFrom.configMapKeyRef' }
      : from?.secretKeyRef
        ? { kind: 'Secret', ref: from.secretKeyRef, field: 'spec.promptFrom.secretKeyRef' }
        : undefined;
    if (!ref) throw new ResolveError('spec: neither prompt nor promptFrom is set');
    return (await this.read(namespace, ref)) ?? Buffer.alloc(0);
  }

  private async envEntry(namespace: string, e: EnvVar, field: string): Promise<EnvEntry> {
    if (!e.valueFrom) return { name: e.name, value: e.value ?? '' };
    const v = e.valueFrom;
    const ref: Ref = v.configMapKeyRef
      ? { kind: 'ConfigMap', ref: v.configMapKeyRef, field: `${field}.valueFrom.configMapKeyRef` }
      : { kind: 'Secret', ref: v.secretKeyRef!, field: `${field}.valueFrom.secretKeyRef` };
    const bytes = await this.read(namespace, ref);
    if (bytes && bytes.includes(0)) throw new ResolveError(`${ref.field}: key "${ref.ref.key}" of ${ref.kind} "${ref.ref.name}" contains a NUL byte, which an environment variable cannot hold`);
    // Values from ConfigMaps and Secrets are taken verbatim, as the kubelet does.
    return { name: e.name, value: bytes?.toString('utf8') ?? '', expand: false };
  }

  /** The key's bytes; undefined when it is missing and the reference is optional. */
  private async read(namespace: string, r: Ref): Promise<Buffer | undefined> {
    const opts = callOptions({ timeoutMs: this.timeoutMs });
    const { name, key, optional } = r.ref;
    try {
      if (r.kind === 'ConfigMap') {
        const cm = await this.core.readNamespacedConfigMap({ namespace, name }, opts);
        const text = cm.data?.[key];
        if (text !== undefined) return Buffer.from(text, 'utf8');
        const bin = cm.binaryData?.[key];
        if (bin !== undefined) return Buffer.from(bin, 'base64');
      } else {
        const secret = await this.core.readNamespacedSecret({ namespace, name }, opts);
        const b64 = secret.data?.[key];
        if (b64 !== undefined) return Buffer.from(b64, 'base64');
        const text = secret.stringData?.[key];
        if (text !== undefined) return Buffer.from(text, 'utf8');
      }
      if (optional) return undefined;
      throw new ResolveError(`${r.field}: ${r.kind} "${name}" has no key "${key}"`);
    } catch (err) {
      if (err instanceof ResolveError) throw err;
      if (isNotFound(err)) {
        if (optional) return undefined;
        throw new ResolveError(`${r.field}: ${r.kind} "${name}" not found in namespace ${namespace}`);
      }
      // Retrying a refusal only hides it: the namespace did not opt in to the sidecars' reads.
      if (statusCode(err) === 403) {
        throw new ResolveError(
          `${r.field}: the node sidecar may not read ${r.kind} "${name}": namespace ${namespace} has not opted in; create the RoleBinding ${REFERENCES_ROLE_BINDING} there: ${optInCommand(namespace)}`,
        );
      }
      throw err;
    }
  }
}
