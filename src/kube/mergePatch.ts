/**
 * Minimal JSON merge patches (RFC 7386), so a writer sends only what it changes and skips the write
 * entirely when nothing changed.
 *
 * Merge patch semantics to keep in mind:
 * - a key set to null removes the field; hence a field cannot be *set* to null (null or undefined in
 *   `desired` both mean "absent");
 * - objects merge key by key, so two writers owning different keys of status do not clobber each other;
 * - arrays (conditions included) are replaced whole: an array must have a single writer.
 */
import { isDeepStrictEqual } from 'node:util';

type Obj = Record<string, unknown>;

const isPlainObject = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const isAbsent = (v: unknown): boolean => v === undefined || v === null;

/** Drops undefined and null object members recursively (what JSON and a merge patch would make of them). */
export function pruneAbsent<T>(v: T): T {
  if (Array.isArray(v)) return (v as unknown[]).map((x) => (isPlainObject(x) || Array.isArray(x) ? pruneAbsent(x) : x)) as T;
  if (!isPlainObject(v)) return v;
  const out: Obj = {};
  for (const [k, x] of Object.entries(v)) if (!isAbsent(x)) out[k] = pruneAbsent(x);
  return out as T;
}

/** Equality as JSON sees it: undefined members do not count. */
export function jsonEqual(a: unknown, b: unknown): boolean {
  return isDeepStrictEqual(pruneAbsent(a), pruneAbsent(b));
}

/** The merge patch that turns `from` into `to`, or undefined when there is nothing to change. */
export function mergePatchDiff(from: Obj | undefined, to: Obj): Obj | undefined {
  const base = from ?? {};
  const patch: Obj = {};
  for (const [k, desired] of Object.entries(to)) {
    const current = base[k];
    if (isAbsent(desired)) {
      if (!isAbsent(current)) patch[k] = null;
    } else if (isPlainObject(desired) && isPlainObject(current)) {
      const sub = mergePatchDiff(current, desired);
      if (sub) patch[k] = sub;
    } else if (!jsonEqual(current, desired)) {
      patch[k] = pruneAbsent(desired);
    }
  }
  for (const [k, current] of Object.entries(base)) if (!(k in to) && !isAbsent(current)) patch[k] = null;
  return Object.keys(patch).length > 0 ? patch : undefined;
}

/**
 * The status merge patch from the observed status to the desired one; undefined when nothing changes,
 * so callers can skip the write. `desired` is the whole status as this writer wants it: fields it leaves
 * out are removed, fields equal in both are not sent (so other writers' fields are untouched).
 */
export function diffStatus<S extends object>(observed: S | undefined, desired: S): Obj | undefined {
  return mergePatchDiff(observed as Obj | undefined, desired as Obj);
}

/** Applies a merge patch (RFC 7386) to a value: what the server will store. For tests and dry runs. */
export function applyMergePatch(target: unknown, patch: unknown): unknown {
  if (!isPlainObject(patch)) return patch;
  const out: Obj = isPlainObject(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = applyMergePatch(out[k], v);
  }
  return out;
}
