/** Field schemas shared by the Agent and AgentNode APIs (Kubernetes conventions). */
import { z } from 'zod';

const DNS_LABEL = '[a-z0-9]([-a-z0-9]*[a-z0-9])?';
export const DNS_SUBDOMAIN_PATTERN = `^${DNS_LABEL}(\\.${DNS_LABEL})*$`;

/** A Kubernetes object name (RFC 1123 subdomain). */
export const objectName = (description: string) => z.string().min(1).max(253).regex(new RegExp(DNS_SUBDOMAIN_PATTERN)).meta({ description });

function isFullDate(s: string): boolean {
  const m = /^([0-9]{4})-([0-9]{2})-([0-9]{2})$/.exec(s);
  if (!m) return false;
  const [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const date = new Date(0);
  date.setUTCFullYear(y, mo - 1, d);
  return date.getUTCFullYear() === y && date.getUTCMonth() === mo - 1 && date.getUTCDate() === d;
}

/**
 * The API server's check for `format: date-time` (kube-openapi strfmt.IsDateTime), reproduced so
 * zod rejects exactly the timestamps the API server rejects.
 */
export function isDateTime(s: string): boolean {
  const [date, time] = s.toLowerCase().split('t');
  if (s.length < 4 || date === undefined || time === undefined || !isFullDate(date)) return false;
  const m = /^([0-9]{2}):([0-9]{2}):([0-9]{2})([^\n][0-9]+)?(z|([+-][0-9]{2}:[0-9]{2}))$/.exec(time);
  return !!m && m[1]! <= '23' && m[2]! <= '59' && m[3]! <= '59';
}

/** RFC 3339 timestamp, as metav1.Time serialises. */
export const timestamp = (description: string) =>
  z.string().max(64).refine(isDateTime, { message: 'must be an RFC 3339 date-time such as 2026-01-02T03:04:05Z' }).meta({ description, format: 'date-time' });

/**
 * zod's half of `x-kubernetes-list-type: map`: the API server rejects two items with the same
 * key (as "Duplicate value" at the second one), so zod does too.
 */
export function uniqueBy<T>(key: keyof T & string) {
  return (items: T[], ctx: z.RefinementCtx<T[]>): void => {
    const seen = new Set<unknown>();
    items.forEach((item, i) => {
      if (seen.has(item[key])) ctx.addIssue({ code: 'custom', message: `duplicate ${key} ${JSON.stringify(item[key])}`, path: [i] });
      seen.add(item[key]);
    });
  };
}

export const keySelector = (kind: 'ConfigMap' | 'Secret') =>
  z
    .object({
      name: objectName(`Name of the ${kind} in the Agent's namespace.`),
      key: z
        .string()
        .min(1)
        .max(253)
        .regex(/^[-._a-zA-Z0-9]+$/)
        .meta({ description: `Key within the ${kind}.` }),
      optional: z
        .boolean()
        .optional()
        .meta({ description: `When true, a missing ${kind} or key yields an empty value instead of an error.` }),
    })
    .strict()
    .meta({ description: `Selects a key of a ${kind} in the Agent's namespace.` });

export type KeySelector = z.infer<ReturnType<typeof keySelector>>;

/** metav1.Condition. */
export const condition = z
  .object({
    type: z.string().min(1).max(316).meta({ description: 'Type of condition in CamelCase.' }),
    status: z.enum(['True', 'False', 'Unknown']).meta({ description: 'Status of the condition: True, False or Unknown.' }),
    observedGeneration: z.int().min(0).optional().meta({ description: '.metadata.generation the condition was set upon.' }),
    lastTransitionTime: timestamp('Last time the condition changed from one status to another.'),
    reason: z
      .string()
      .min(1)
      .max(1024)
      .regex(/^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$/)
      .meta({ description: 'Programmatic identifier of the reason for the last transition, in CamelCase.' }),
    message: z.string().max(32768).meta({ description: 'Human readable message about the transition.' }),
  })
  .strict()
  .meta({ description: 'Condition in the standard metav1.Condition shape.' });

export type Condition = z.infer<typeof condition>;

export const conditions = z
  .array(condition)
  .max(16)
  .superRefine(uniqueBy('type'))
  .optional()
  .meta({
    description: 'Latest observations of the object state, one per type.',
    'x-kubernetes-list-type': 'map',
    'x-kubernetes-list-map-keys': ['type'],
  });

/** Object metadata as far as our schemas care; the API server validates the rest. */
export const objectMeta = z
  .object({
    name: z.string().optional(),
    generateName: z.string().optional(),
    namespace: z.string().optional(),
    uid: z.string().optional(),
    resourceVersion: z.string().optional(),
    generation: z.int().optional(),
    creationTimestamp: z.string().optional(),
    deletionTimestamp: z.string().optional(),
    labels: z.record(z.string(), z.string()).optional(),
    annotations: z.record(z.string(), z.string()).optional(),
    finalizers: z.array(z.string()).optional(),
  })
  .passthrough();
