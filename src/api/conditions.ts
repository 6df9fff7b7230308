/** metav1.Condition list helpers (pure): the transition time moves only when the status does. */
import type { Condition } from './fields.js';

export type ConditionInput = Omit<Condition, 'lastTransitionTime' | 'observedGeneration'>;

export function findCondition(list: readonly Condition[] | undefined, type: string): Condition | undefined {
  return list?.find((c) => c.type === type);
}

/** Returns a new list with `input` set, keeping lastTransitionTime when the status is unchanged. */
export function setCondition(list: readonly Condition[] | undefined, input: ConditionInput, now: string, observedGeneration?: number): Condition[] {
  const current = findCondition(list, input.type);
  const next: Condition = {
    type: input.type,
    status: input.status,
    reason: input.reason,
    message: input.message,
    lastTransitionTime: current && current.status === input.status ? current.lastTransitionTime : now,
    ...(observedGeneration !== undefined ? { observedGeneration } : {}),
  };
  const rest = (list ?? []).filter((c) => c.type !== input.type);
  return [...rest, next].sort((a, b) => a.type.localeCompare(b.type));
}

/**
 * Sets each of `inputs` and removes the conditions of `family` that are not among them: for a
 * family whose members are present only while they hold (kstatus' Reconciling and Stalled).
 */
export function setConditionFamily(list: readonly Condition[] | undefined, family: readonly string[], inputs: readonly ConditionInput[], now: string, observedGeneration?: number): Condition[] {
  const keep = new Set(inputs.map((c) => c.type));
  let next = (list ?? []).filter((c) => keep.has(c.type) || !family.includes(c.type));
  for (const c of inputs) next = setCondition(next, c, now, observedGeneration);
  return next;
}

/**
 * Every condition marked as judged against `generation`: a controller that re-evaluates all of its
 * conditions on each pass vouches for the unchanged ones too.
 */
export function observedAt(list: readonly Condition[] | undefined, generation: number | undefined): Condition[] | undefined {
  if (!list || generation === undefined) return list?.slice();
  return list.map((c) => ({ ...c, observedGeneration: generation }));
}
