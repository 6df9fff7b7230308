/** Timestamps as Kubernetes writes them (RFC 3339, UTC). */

/** metav1.Time precision: seconds. */
export function rfc3339(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** metav1.MicroTime-like precision, for records where sub-second timing matters. */
export function rfc3339Milli(d: Date): string {
  return d.toISOString();
}

export function parseTime(s: string | undefined): number | undefined {
  if (!s) return undefined;
  const t = Date.parse(s);
  return Number.isNaN(t) ? undefined : t;
}
