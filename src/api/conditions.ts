/** metav1.Condition list helpers (pure): the transition time moves only when the status does. */
import type { Condition } from './fields.js';

export type ConditionInput = Omit<Condition, 'lastTransitionTime' | 'observedGeneration'>;

export function findCondition(list: readonly Condition[] | undefined, type: string): Condition | undefined {
  return list?.find((c) => c.type === type);
}

/** Returns a new list with `input` set, keeping lastTransitionTime when the status is unchanged. */
export function setCondition(
  list: readonly Condition[] | undefined,
  input: ConditionInput,
  now: string,
  observedGeneration?: number,
): Condition[] {
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

export function isConditionTrue(list: readonly Condition[] | undefined, type: string): boolean {
  return findCondition(list, type)?.status === 'True';
}
