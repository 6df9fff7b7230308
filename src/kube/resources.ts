/**
 * A small typed client for our custom resources over client-node's CustomObjectsApi: reads, writes with
 * optimistic concurrency, merge patches on the object and on /status, and finalizer edits that two
 * writers cannot clobber.
 */
import { CustomObjectsApi, PatchStrategy, type KubeConfig } from '@kubernetes/client-node';
import { AGENT_KIND, AGENT_NODE_KIND, AGENT_NODE_PLURAL, AGENT_PLURAL, GROUP, VERSION } from '../api/constants.js';
import type { Agent } from '../api/agent.js';
import type { AgentNode } from '../api/agentNode.js';
import { callOptions } from './client.js';
import { isConflict, isInvalid, isNotFound, statusBody, StaleObjectError } from './errors.js';

export { describeError, isConflict, isGone, isNotFound, statusCode, StaleObjectError } from './errors.js';

/** The metadata fields this package relies on. */
export interface ObjectMeta {
  name?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  finalizers?: string[];
  deletionTimestamp?: string;
}

export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata?: ObjectMeta;
}

/** Where a resource lives in the API: group '' is the core group (/api/v1). */
export interface ResourceKind {
  group: string;
  version: string;
  plural: string;
  kind: string;
  namespaced: boolean;
}

export const AGENT_RESOURCE: ResourceKind = { group: GROUP, version: VERSION, plural: AGENT_PLURAL, kind: AGENT_KIND, namespaced: true };
export const AGENT_NODE_RESOURCE: ResourceKind = {
  group: GROUP,
  version: VERSION,
  plural: AGENT_NODE_PLURAL,
  kind: AGENT_NODE_KIND,
  namespaced: false,
};

/** Core Namespaces: the controller reads their node-pool annotation. */
export const NAMESPACE_RESOURCE: ResourceKind = { group: '', version: 'v1', plural: 'namespaces', kind: 'Namespace', namespaced: false };

export const apiVersionOf = (r: ResourceKind): string => (r.group ? `${r.group}/${r.version}` : r.version);

/** The REST path of a collection (namespace undefined: across all namespaces) or of one object. */
export function resourcePath(r: ResourceKind, namespace?: string, name?: string): string {
  const base = r.group ? `/apis/${r.group}/${r.version}` : `/api/${r.version}`;
  const ns = r.namespaced && namespace ? `/namespaces/${encodeURIComponent(namespace)}` : '';
  return `${base}${ns}/${r.plural}${name ? `/${encodeURIComponent(name)}` : ''}`;
}

export interface ObjectRef {
  name: string;
  /** Required for namespaced resources, ignored for cluster-scoped ones. */
  namespace?: string;
}

export const refOf = (o: KubeObject): ObjectRef => ({ name: o.metadata?.name ?? '', namespace: o.metadata?.namespace });

export interface ListOptions {
  /** Namespaced resources only; undefined lists across all namespaces. */
  namespace?: string;
  labelSelector?: string;
  fieldSelector?: string;
  /** '' (default): a consistent read; '0': any cached version (cheaper, possibly stale). */
  resourceVersion?: string;
  limit?: number;
  continue?: string;
}

export interface ObjectList<T> {
  items: T[];
  resourceVersion: string;
  continue?: string;
}

export interface DeleteOptions {
  /** Delete only this incarnation: a newer object with the same name is left alone (409 otherwise). */
  uid?: string;
  resourceVersion?: string;
  propagationPolicy?: 'Background' | 'Foreground' | 'Orphan';
}

export interface PatchOptions {
  /** Precondition: the write fails with 409 unless the object is still at this resourceVersion. */
  resourceVersion?: string;
}

export type JsonPatchOp = { op: 'add' | 'replace' | 'test'; path: string; value: unknown } | { op: 'remove'; path: string };

/** Typed CRUD for one custom resource kind. Errors are client-node ApiExceptions (see errors.ts). */
export class ResourceClient<T extends KubeObject> {
  private readonly api: CustomObjectsApi;

  constructor(
    kc: KubeConfig,
    readonly resource: ResourceKind,
    private readonly timeoutMs?: number,
  ) {
    this.api = kc.makeApiClient(CustomObjectsApi);
  }

  private opts(contentType?: string) {
    return callOptions({ timeoutMs: this.timeoutMs, contentType });
  }

  private base(ref: ObjectRef) {
    const { group, version, plural, namespaced } = this.resource;
    if (namespaced && !ref.namespace) throw new Error(`${this.resource.kind} ${ref.name}: namespace required`);
    return { group, version, plural, name: ref.name, namespace: ref.namespace ?? '' };
  }

  async get(ref: ObjectRef): Promise<T> {
    const p = this.base(ref);
    return (await (this.resource.namespaced ? this.api.getNamespacedCustomObject(p, this.opts()) : this.api.getClusterCustomObject(p, this.opts()))) as T;
  }

  /** Like get, but undefined when the object does not exist. */
  async find(ref: ObjectRef): Promise<T | undefined> {
    try {
      return await this.get(ref);
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async list(o: ListOptions = {}): Promise<ObjectList<T>> {
    const { group, version, plural } = this.resource;
    const q = {
      group,
      version,
      plural,
      labelSelector: o.labelSelector,
      fieldSelector: o.fieldSelector,
      resourceVersion: o.resourceVersion,
      limit: o.limit,
      _continue: o.continue,
    };
    const res = (await (this.resource.namespaced && o.namespace
      ? this.api.listNamespacedCustomObject({ ...q, namespace: o.namespace }, this.opts())
      : this.api.listClusterCustomObject(q, this.opts()))) as { items?: T[]; metadata?: { resourceVersion?: string; continue?: string } };
    return { items: res.items ?? [], resourceVersion: res.metadata?.resourceVersion ?? '', continue: res.metadata?.continue || undefined };
  }

  async create(obj: T): Promise<T> {
    const { group, version, plural, namespaced } = this.resource;
    const body = { apiVersion: apiVersionOf(this.resource), kind: this.resource.kind, ...obj };
    return (await (namespaced
      ? this.api.createNamespacedCustomObject({ group, version, plural, namespace: obj.metadata?.namespace ?? '', body }, this.opts())
      : this.api.createClusterCustomObject({ group, version, plural, body }, this.opts()))) as T;
  }

  /** Returns false when the object was already gone. Precondition failures throw 409. */
  async delete(ref: ObjectRef, o: DeleteOptions = {}): Promise<boolean> {
    const p = this.base(ref);
    const preconditions = o.uid || o.resourceVersion ? { uid: o.uid, resourceVersion: o.resourceVersion } : undefined;
    const req = { ...p, propagationPolicy: o.propagationPolicy, body: { preconditions } };
    try {
      await (this.resource.namespaced ? this.api.deleteNamespacedCustomObject(req, this.opts()) : this.api.deleteClusterCustomObject(req, this.opts()));
      return true;
    } catch (err) {
      if (isNotFound(err)) return false;
      throw err;
    }
  }

  /** JSON merge patch on the object (metadata, spec); see mergePatch.ts for the semantics. */
  async patch(ref: ObjectRef, mergePatch: Record<string, unknown>, o: PatchOptions = {}): Promise<T> {
    const p = { ...this.base(ref), body: withPrecondition(mergePatch, o) };
    const opts = this.opts(PatchStrategy.MergePatch);
    return (await (this.resource.namespaced ? this.api.patchNamespacedCustomObject(p, opts) : this.api.patchClusterCustomObject(p, opts))) as T;
  }

  /** Merge patch of labels, annotations, ... */
  patchMeta(ref: ObjectRef, metadata: Record<string, unknown>, o: PatchOptions = {}): Promise<T> {
    return this.patch(ref, { metadata }, o);
  }

  /** JSON merge patch on /status with `{status: statusPatch}`; spec and metadata changes are ignored there. */
  async patchStatus(ref: ObjectRef, statusPatch: Record<string, unknown>, o: PatchOptions = {}): Promise<T> {
    const p = { ...this.base(ref), body: withPrecondition({ status: statusPatch }, o) };
    const opts = this.opts(PatchStrategy.MergePatch);
    return (await (this.resource.namespaced ? this.api.patchNamespacedCustomObjectStatus(p, opts) : this.api.patchClusterCustomObjectStatus(p, opts))) as T;
  }

  /** JSON patch (RFC 6902) on the object. */
  async jsonPatch(ref: ObjectRef, ops: JsonPatchOp[]): Promise<T> {
    const p = { ...this.base(ref), body: ops };
    const opts = this.opts(PatchStrategy.JsonPatch);
    return (await (this.resource.namespaced ? this.api.patchNamespacedCustomObject(p, opts) : this.api.patchClusterCustomObject(p, opts))) as T;
  }

  /**
   * Adds `finalizer` unless `obj` (as last observed) already has it. The patch tests that the finalizer
   * list (or, when there is none, the resourceVersion) is still what was observed, so a concurrent edit
   * is never overwritten: throws StaleObjectError (isConflict) when it changed — re-read and requeue.
   */
  async addFinalizer(obj: T, finalizer: string): Promise<T> {
    const current = obj.metadata?.finalizers;
    if (current?.includes(finalizer)) return obj;
    return this.guardedPatch(obj, finalizerAddOps(obj, finalizer));
  }

  /** Removes `finalizer` if `obj` has it, with the same guard as addFinalizer. */
  async removeFinalizer(obj: T, finalizer: string): Promise<T> {
    const ops = finalizerRemoveOps(obj, finalizer);
    return ops ? this.guardedPatch(obj, ops) : obj;
  }

  private async guardedPatch(obj: T, ops: JsonPatchOp[]): Promise<T> {
    try {
      return await this.jsonPatch(refOf(obj), ops);
    } catch (err) {
      if (isConflict(err) || (isInvalid(err) && isFailedTest(err))) {
        throw new StaleObjectError(`${this.resource.kind} ${obj.metadata?.namespace ?? ''}/${obj.metadata?.name}: changed since read`, err);
      }
      throw err;
    }
  }
}

function withPrecondition(body: Record<string, unknown>, o: PatchOptions): Record<string, unknown> {
  if (!o.resourceVersion) return body;
  const metadata = (body.metadata as Record<string, unknown> | undefined) ?? {};
  return { ...body, metadata: { ...metadata, resourceVersion: o.resourceVersion } };
}

/** JSON patch adding a finalizer, guarded by a `test` of what was observed. */
export function finalizerAddOps(obj: KubeObject, finalizer: string): JsonPatchOp[] {
  const current = obj.metadata?.finalizers;
  if (current) {
    return [
      { op: 'test', path: '/metadata/finalizers', value: current },
      { op: 'add', path: '/metadata/finalizers/-', value: finalizer },
    ];
  }
  // No list to test: test the resourceVersion instead (stricter, but only for the first finalizer).
  const rv = obj.metadata?.resourceVersion;
  if (!rv) throw new Error('addFinalizer needs the object as read from the server (no resourceVersion)');
  return [
    { op: 'test', path: '/metadata/resourceVersion', value: rv },
    { op: 'add', path: '/metadata/finalizers', value: [finalizer] },
  ];
}

/** JSON patch removing a finalizer by index, guarded by a `test` of the whole list; undefined if absent. */
export function finalizerRemoveOps(obj: KubeObject, finalizer: string): JsonPatchOp[] | undefined {
  const current = obj.metadata?.finalizers ?? [];
  const i = current.indexOf(finalizer);
  if (i < 0) return undefined;
  return [
    { op: 'test', path: '/metadata/finalizers', value: current },
    { op: 'remove', path: `/metadata/finalizers/${i}` },
  ];
}

/**
 * The API server answers a JSON patch that does not apply (a failed `test`, a `remove` of an index that
 * no longer exists) with a bare 422: the generic message and no field causes, unlike validation errors.
 */
function isFailedTest(err: unknown): boolean {
  const body = statusBody(err);
  return /rejected our request due to an error in our request/.test(body?.message ?? '') && !body?.details?.causes?.length;
}

export const agentClient = (kc: KubeConfig, timeoutMs?: number) => new ResourceClient<Agent & KubeObject>(kc, AGENT_RESOURCE, timeoutMs);
export const agentNodeClient = (kc: KubeConfig, timeoutMs?: number) => new ResourceClient<AgentNode & KubeObject>(kc, AGENT_NODE_RESOURCE, timeoutMs);
