/**
 * Cross-field rules written once and enforced twice: as CEL `x-kubernetes-validations` in the
 * generated CRD (the API server rejects at apply time) and as zod refinements (the runtime rejects
 * what reaches it some other way). Keeping both forms side by side is what keeps them in step; the
 * parity test proves they agree.
 */
import { z } from 'zod';

export interface Rule<T> {
  /** CEL expression; `self` is the value the rule is attached to. */
  rule: string;
  message: string;
  /** Relative JSONPath (e.g. `.prompt`) the API server reports the error at. */
  fieldPath?: string;
  /** Same predicate as `rule`, for zod. */
  check: (value: T) => boolean;
}

/** A transition rule compares the old and new value of an update (CEL `oldSelf`). */
export interface TransitionRule<T> {
  rule: string;
  message: string;
  fieldPath?: string;
  check: (value: T, old: T) => boolean;
}

type CelRule = { rule: string; message: string; fieldPath?: string };

function celOf(r: CelRule): CelRule {
  return r.fieldPath ? { rule: r.rule, message: r.message, fieldPath: r.fieldPath } : { rule: r.rule, message: r.message };
}

/** Path segments of a relative JSONPath like `.spec.prompt` or `.env[0]`. */
function pathOf(fieldPath: string | undefined): string[] {
  return fieldPath ? fieldPath.split('.').filter(Boolean) : [];
}

const transitions = new WeakMap<z.ZodType, TransitionRule<unknown>[]>();

/** Attaches rules to a schema: CEL for the CRD, refinements for zod. */
export function withRules<S extends z.ZodType>(schema: S, rules: Rule<z.output<S>>[], transitionRules: TransitionRule<z.output<S>>[] = []): S {
  const refined = schema.superRefine((value, ctx) => {
    for (const r of rules) {
      if (!r.check(value)) ctx.addIssue({ code: 'custom', message: r.message, path: pathOf(r.fieldPath) });
    }
  });
  const cel = [...rules, ...transitionRules].map(celOf);
  const withMeta = refined.meta({ ...(schema.meta() ?? {}), 'x-kubernetes-validations': cel });
  if (transitionRules.length > 0) transitions.set(withMeta, transitionRules as TransitionRule<unknown>[]);
  return withMeta;
}

/** The transition rules attached to a schema by withRules. */
export function transitionRulesOf<T>(schema: z.ZodType): TransitionRule<T>[] {
  return transitions.get(schema) ?? [];
}

/** True when `key` is present (CEL `has()`), for optional fields. */
export function has<T extends object>(value: T | undefined, key: keyof T): boolean {
  return value !== undefined && value[key] !== undefined;
}
