/**
 * The in-session report protocol: request and response bodies as zod schemas, and the JSONL records
 * the report server writes. Pure validation, shared by the server and the `report` CLI so both
 * reject the same input with the same message.
 */
import { z } from 'zod';
import { childSpec, type ChildRefusal, type ChildSummary } from '../api/agent.js';
import { LIMITS } from '../api/constants.js';
import { REPORTED_STATES } from '../api/phase.js';

export const SEVERITIES = ['info', 'low', 'medium', 'high', 'critical'] as const;

export const REPORT_PATHS = { status: '/v1/report', finding: '/v1/findings', health: '/healthz' } as const;

/** Calls on the channel that ask the platform something (answered with 200 and a JSON body). */
export const CALL_PATHS = {
  spawn: '/v1/children/spawn',
  list: '/v1/children/list',
  output: '/v1/children/output',
  stop: '/v1/children/stop',
} as const;
export type CallKind = keyof typeof CALL_PATHS;
export const RECORD_FILES = { status: 'reports.jsonl', finding: 'findings.jsonl' } as const;

export const MAX_FINDING_TYPE_LENGTH = 128;
/** A finding's `data`, serialised as JSON, in bytes. */
export const MAX_DATA_BYTES = 64 * 1024;
/** Nesting bound for `data`: keeps validation and JSON.stringify well clear of the stack limit. */
export const MAX_DATA_DEPTH = 64;
/**
 * Request body bound. Above MAX_DATA_BYTES by enough headroom that every finding this schema accepts,
 * serialised compactly, fits: message and type at 6 bytes per character (JSON's \uXXXX escapes) are
 * under 26 KiB.
 */
export const MAX_BODY_BYTES = MAX_DATA_BYTES + 32 * 1024;

const enumMessage = (values: readonly string[]) => `must be one of ${values.join(', ')}`;
const lengthMessage = (min: number, max: number) => (min > 0 ? `must be a string of ${min} to ${max} characters` : `must be a string of at most ${max} characters`);

const text = (min: number, max: number) =>
  z
    .string({ error: lengthMessage(min, max) })
    .min(min, { error: lengthMessage(min, max) })
    .max(max, { error: lengthMessage(min, max) });

/**
 * Why `value` is not plain JSON data within the bounds, or undefined when it is. Iterative, so a
 * deeply nested value cannot overflow the stack before the depth bound rejects it.
 */
export function jsonDataProblem(value: unknown): string | undefined {
  const stack: Array<[unknown, number]> = [[value, 1]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!;
    if (depth > MAX_DATA_DEPTH) return `nests deeper than ${MAX_DATA_DEPTH} levels`;
    if (v === null || typeof v === 'string' || typeof v === 'boolean') continue;
    if (typeof v === 'number') {
      if (!Number.isFinite(v)) return 'holds a number that JSON cannot represent';
      continue;
    }
    if (Array.isArray(v)) {
      for (const item of v) stack.push([item, depth + 1]);
      continue;
    }
    if (typeof v === 'object') {
      const proto: unknown = Object.getPrototypeOf(v);
      if (proto !== Object.prototype && proto !== null) return 'holds an object that is not plain JSON';
      for (const item of Object.values(v)) stack.push([item, depth + 1]);
      continue;
    }
    return `holds a ${typeof v}, which is not JSON`;
  }
  const bytes = Buffer.byteLength(JSON.stringify(value));
  if (bytes > MAX_DATA_BYTES) return `is ${bytes} bytes as JSON, over the ${MAX_DATA_BYTES} byte limit`;
  return undefined;
}

const jsonData = z.unknown().superRefine((value, ctx) => {
  if (value === undefined) return;
  const problem = jsonDataProblem(value);
  if (problem) ctx.addIssue({ code: 'custom', message: `must be JSON data: it ${problem}` });
});

export const statusReportSchema = z
  .object({
    status: z.enum(REPORTED_STATES, { error: enumMessage(REPORTED_STATES) }),
    progress: z.int({ error: 'must be an integer from 0 to 100' }).min(0, { error: 'must be an integer from 0 to 100' }).max(100, { error: 'must be an integer from 0 to 100' }).optional(),
    message: text(0, LIMITS.messageLength).optional(),
  })
  .strict();
export type StatusReport = z.infer<typeof statusReportSchema>;

export const findingSchema = z
  .object({
    type: text(1, MAX_FINDING_TYPE_LENGTH),
    severity: z.enum(SEVERITIES, { error: enumMessage(SEVERITIES) }),
    message: text(1, LIMITS.messageLength),
    data: jsonData.optional(),
  })
  .strict();
export type Finding = z.infer<typeof findingSchema>;

/** A line of reports.jsonl / findings.jsonl: the report as received plus the server's timestamp. */
const recordedAt = { at: z.iso.datetime() };
export const statusRecordSchema = statusReportSchema.extend(recordedAt);
export const findingRecordSchema = findingSchema.extend(recordedAt);

/** 202: the report is durable in the agent's workspace; it reaches the Agent's status later. */
export const acceptedResponseSchema = z.object({ accepted: z.literal(true), at: z.iso.datetime() }).strict();
export type AcceptedResponse = z.infer<typeof acceptedResponseSchema>;

/** Every non-2xx answer. */
export const errorResponseSchema = z.object({ error: z.string() }).strict();
export type ErrorResponse = z.infer<typeof errorResponseSchema>;

export type Validated<T> = { ok: true; value: T } | { ok: false; error: string };

/** How a field is named in errors: as is for HTTP bodies; the CLI names its flag instead. */
export type FieldNamer = (field: string) => string;
const asIs: FieldNamer = (field) => field;

/** One line naming every offending field, e.g. `progress: must be an integer from 0 to 100`. */
export function describeIssues(issues: readonly z.core.$ZodIssue[], name: FieldNamer = asIs): string {
  return issues
    .map((issue) => {
      if (issue.code === 'unrecognized_keys') {
        return `unknown field${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `'${k}'`).join(', ')}`;
      }
      const field = issue.path.map(String).join('.');
      if (!field) return issue.code === 'invalid_type' ? `body: must be a JSON object (${issue.message})` : `request: ${issue.message}`;
      return `${name(field)}: ${issue.message}`;
    })
    .join('; ');
}

function validate<T>(schema: z.ZodType<T>, input: unknown, name: FieldNamer): Validated<T> {
  const result = schema.safeParse(input);
  return result.success ? { ok: true, value: result.data } : { ok: false, error: describeIssues(result.error.issues, name) };
}

export const validateStatusReport = (input: unknown, name: FieldNamer = asIs): Validated<StatusReport> => validate(statusReportSchema, input, name);
export const validateFinding = (input: unknown, name: FieldNamer = asIs): Validated<Finding> => validate(findingSchema, input, name);

/** A child's name as its parent's agent gives it; the Agent is named `<parent>-<name>`. */
const childName = z
  .string({ error: 'must be a string' })
  .min(1, { error: 'must not be empty' })
  .max(63, { error: 'must be at most 63 characters' })
  .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, { error: 'must be lower case letters, digits and -, starting and ending with a letter or digit' })
  .meta({ description: "The child's name: its Agent is named <this agent's name>-<name> (or <name> when it already starts with that prefix)." });

/** A spawn request's bound, serialised, so a parent's status stays far below etcd's limit. */
export const MAX_SPAWN_BYTES = 24 * 1024;

export const spawnChildSchema = childSpec.extend({ name: childName }).superRefine((v, ctx) => {
  const bytes = Buffer.byteLength(JSON.stringify(v));
  if (bytes > MAX_SPAWN_BYTES) ctx.addIssue({ code: 'custom', message: `the request is ${bytes} bytes as JSON, over the ${MAX_SPAWN_BYTES} byte limit`, path: [] });
});
export type SpawnChild = z.infer<typeof spawnChildSchema>;

export const listChildrenSchema = z.object({}).strict();

export const MAX_OUTPUT_LINES = 1000;
export const childOutputSchema = z
  .object({
    name: childName,
    tail: z
      .int({ error: `must be an integer from 1 to ${MAX_OUTPUT_LINES}` })
      .min(1, { error: `must be an integer from 1 to ${MAX_OUTPUT_LINES}` })
      .max(MAX_OUTPUT_LINES, { error: `must be an integer from 1 to ${MAX_OUTPUT_LINES}` })
      .optional()
      .meta({ description: 'How many of the last lines to return (default 100).' }),
    grep: text(1, 256).optional().meta({ description: 'Only lines containing this text (plain text, not a pattern).' }),
  })
  .strict();

export const stopChildSchema = z
  .object({
    name: childName,
    reason: text(0, 1024).optional().meta({ description: "Why; recorded as the child's stop reason." }),
  })
  .strict();
export type StopChild = z.infer<typeof stopChildSchema>;

export const CALL_SCHEMAS = {
  spawn: spawnChildSchema,
  list: listChildrenSchema,
  output: childOutputSchema,
  stop: stopChildSchema,
} as const satisfies Record<CallKind, z.ZodType>;
export type CallInput<K extends CallKind> = z.infer<(typeof CALL_SCHEMAS)[K]>;

/** Answers. */
export interface SpawnAnswer {
  /** The child's Agent name. */
  name: string;
  /** The request this answers: a refusal for an older request time does not answer it. */
  requestTime: string;
}
export interface ChildrenAnswer {
  active: number;
  succeeded: number;
  failed: number;
  children: ChildSummary[];
  refused: ChildRefusal[];
  /** Spawn requests the controller has not answered yet. */
  pending: string[];
}
export interface OutputAnswer {
  name: string;
  /** Where the lines come from: the running child's output log, or its archive. */
  source: 'running' | 'archive';
  lines: string[];
}
export interface StopAnswer {
  name: string;
  stopRequested: true;
}

export function validateCall<K extends CallKind>(kind: K, input: unknown, name: FieldNamer = asIs): Validated<CallInput<K>> {
  return validate(CALL_SCHEMAS[kind] as unknown as z.ZodType<CallInput<K>>, input, name);
}
