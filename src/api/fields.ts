/** Field schemas shared by the Agent and AgentNode APIs (Kubernetes conventions). */
import { z } from 'zod';

const DNS_LABEL = '[a-z0-9]([-a-z0-9]*[a-z0-9])?';
export const DNS_SUBDOMAIN_PATTERN = `^${DNS_LABEL}(\\.${DNS_LABEL})*$`;

/** A Kubernetes object name (RFC 1123 subdomain). */
export const objectName = (description: string) =>
  z.string().min(1).max(253).regex(new RegExp(DNS_SUBDOMAIN_PATTERN)).meta({ description });

/** RFC 3339 timestamp, as metav1.Time serialises. */
export const timestamp = (description: string) => z.string().max(64).meta({ description, format: 'date-time' });

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
    observedGeneration: z
      .int()
      .min(0)
      .optional()
      .meta({ description: '.metadata.generation the condition was set upon.' }),
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
