/** A fixed clock for the tables of the pure decisions, which take `now` rather than reading it. */
import { rfc3339 } from '../../src/api/time.js';

/** The tables' epoch (ms). */
export const T0 = Date.parse('2026-11-25T10:00:00Z');

/** T0 plus `s` seconds, as Kubernetes writes a timestamp (RFC 3339, whole seconds). */
export const at = (s: number): string => rfc3339(new Date(T0 + s * 1000));
