/**
 * The Agent API (orchestrator.dev/v1alpha1): the single source of truth. The CRD in crds/ is
 * generated from these schemas (src/api/crd.ts) and a test fails when the two drift.
 */
import { isDeepStrictEqual } from 'node:util';
import { z } from 'zod';
import { DEFAULTS, LIMIT_CONTROLLERS, LIMITS, RESERVED_ENV_NAMES } from './constants.js';
import { QUANTITY_PATTERN } from './quantity.js';
import { conditions, keySelector, objectMeta, timestamp, uniqueBy } from './fields.js';
import { PHASES, REPORTED_STATES } from './phase.js';
import { has, withRules } from './rules.js';

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

const celList = (values: readonly string[]) => `[${values.map((v) => `'${v}'`).join(', ')}]`;

/** A value from exactly one of a ConfigMap key or a Secret key (env valueFrom, promptFrom). */
const keyRefSource = (description: string) =>
  withRules(
    z
      .object({
        configMapKeyRef: keySelector('ConfigMap').optional(),
        secretKeyRef: keySelector('Secret').optional(),
      })
      .strict()
      .meta({ description }),
    [
      {
        rule: 'has(self.configMapKeyRef) != has(self.secretKeyRef)',
        message: 'exactly one of configMapKeyRef or secretKeyRef must be set',
        check: (v) => has(v, 'configMapKeyRef') !== has(v, 'secretKeyRef'),
      },
    ],
  );

const envVarSource = keyRefSource('Source for the value of an environment variable: a ConfigMap or Secret key.');

const envName = z.string().min(1).max(256).regex(ENV_NAME).meta({ description: 'Name of the environment variable: letters, digits and underscores, not starting with a digit.' });
const envValue = z.string().max(LIMITS.envValueLength).optional().meta({
  description: 'Literal value. $(VAR) references to variables defined earlier in the list are expanded; $$ escapes a $.',
});
const notReservedEnv = {
  rule: `!(self.name in ${celList(RESERVED_ENV_NAMES)})`,
  message: `name must not be one of the variables the platform sets: ${RESERVED_ENV_NAMES.join(', ')}`,
  fieldPath: '.name',
  check: (v: { name: string }) => !RESERVED_ENV_NAMES.includes(v.name),
};

const envVar = withRules(
  z.object({ name: envName, value: envValue, valueFrom: envVarSource.optional() }).strict().meta({ description: 'An environment variable for the agent process (the Kubernetes EnvVar shape).' }),
  [
    {
      rule: '!(has(self.value) && has(self.valueFrom))',
      message: 'value and valueFrom are mutually exclusive',
      check: (v) => !(has(v, 'value') && has(v, 'valueFrom')),
    },
    notReservedEnv,
  ],
);

/** A child's env: literal values only, so an agent cannot name a Secret for its child to read. */
const childEnvVar = withRules(z.object({ name: envName, value: envValue }).strict().meta({ description: 'An environment variable with a literal value.' }), [notReservedEnv]);

const childLimits = z
  .object({
    maxTotal: z
      .int()
      .min(0)
      .max(LIMITS.childrenMaxTotal)
      .meta({ description: `Children this Agent may create over its whole run, finished ones included (at most ${LIMITS.childrenMaxTotal}).` }),
    maxConcurrent: z.int().min(0).max(LIMITS.childrenMaxTotal).meta({ description: 'Children of this Agent that may be active at once.' }),
    maxDepth: z.int().min(0).max(LIMITS.childrenMaxDepth).meta({
      description: 'Generations below this Agent: 1 allows children but no grandchildren. A child gets maxDepth - 1; 0 allows no children.',
    }),
  })
  .strict()
  .meta({
    description:
      'How many child Agents this agent may spawn from its session (the MCP tool spawn_child_agent). Absent: none. A child inherits maxTotal and maxConcurrent and one less maxDepth, and cannot widen them.',
  });

const completionChecks = z
  .object({
    minDurationSeconds: z
      .int()
      .min(0)
      .optional()
      .meta({ description: `A reported completion sooner than this after the session started is flagged. Default ${DEFAULTS.minDurationSeconds}.` }),
    minProgressReports: z
      .int()
      .min(0)
      .optional()
      .meta({ description: `A reported completion with fewer progress reports (working or blocked) before it is flagged. Default ${DEFAULTS.minProgressReports}.` }),
  })
  .strict()
  .meta({
    description: 'Plausibility checks on a completion the agent reports: a failed check sets the condition CompletionVerified=False and a Warning Event; the phase stays Completed.',
  });

export const promptSource = keyRefSource("Reads the prompt from a ConfigMap or Secret key in the Agent's namespace.");

const cleanupPolicy = z
  .object({
    keepLogs: z.boolean().optional().meta({ description: 'Archive the session output and reports to the archive volume before deleting the workspace. Default true.' }),
    gracePeriodSeconds: z.int().min(0).max(LIMITS.gracePeriodSecondsMax).optional().meta({ description: 'Seconds between SIGTERM and SIGKILL when the agent is stopped. Default 10.' }),
  })
  .strict()
  .meta({ description: "What happens to the agent's processes and files when it ends." });

const quantity = (description: string) => z.string().max(64).regex(new RegExp(QUANTITY_PATTERN)).meta({ description });

const resources = z
  .object({
    limits: z
      .object({
        memory: quantity("Memory the agent's processes may use together (e.g. 2Gi), enforced by its cgroup's memory.max.").optional(),
        cpu: quantity("CPU the agent's processes may use together, in cores (e.g. 1, 500m), enforced by its cgroup's cpu.max.").optional(),
        pids: z.int().min(1).max(4_194_304).optional().meta({ description: "Processes and threads the agent may have at once, enforced by its cgroup's pids.max." }),
      })
      .strict()
      .optional()
      .meta({
        description:
          "Limits on the agent's cgroup. Enforced where the node's cgroup v2 has the controller; where it has not, the agent runs without that limit and a LimitsNotEnforced Warning Event says which.",
      }),
  })
  .strict()
  .meta({ description: 'Resources of the agent (the Kubernetes shape; only limits).' });

const outputPolicy = z
  .object({
    maxSize: quantity(
      "The most of the agent's output the node keeps (e.g. 10Mi): the first half (output.log) and the last bytes (output-tail.log); what lies between is dropped and counted in status.cleanup.output. Default: the node's --output-max-size; never more than its --output-max-size-limit.",
    ).optional(),
  })
  .strict()
  .meta({ description: "How the agent's terminal output is captured." });

const agentSpecObject = z
  .object({
    prompt: z
      .string()
      // An empty prompt would start the agent with nothing to do: refused at apply, like a missing one.
      .min(1, { error: 'must not be empty' })
      .max(LIMITS.promptBytes)
      .optional()
      .meta({
        description: `The prompt, inline (1 to ${LIMITS.promptBytes} characters). It reaches the agent as a 0600 file named by $AGENT_PROMPT_FILE. Exactly one of prompt and promptFrom.`,
      }),
    promptFrom: promptSource.optional(),
    promptOnStdin: z.boolean().optional().meta({ description: 'Also feed the prompt file to the command on standard input. Default false.' }),
    command: z
      .array(z.string().min(1).max(LIMITS.argLength).meta({ description: 'One argument, passed verbatim.' }))
      .min(1)
      .max(LIMITS.commandItems)
      .meta({
        description: 'The agent command as an argv array; never run through a shell. $(VAR) expands environment variables, including $(AGENT_PROMPT_FILE); $$ escapes a $.',
      }),
    workingDir: z.string().min(1).max(4096).regex(/^\//).optional().meta({ description: "Absolute directory the command starts in. Default: the agent's workspace on the node." }),
    env: z
      .array(envVar)
      .max(LIMITS.envItems)
      .superRefine(uniqueBy('name'))
      .optional()
      .meta({
        description: 'Environment variables for the agent, in addition to the AGENT_* variables the platform sets.',
        'x-kubernetes-list-type': 'map',
        'x-kubernetes-list-map-keys': ['name'],
      }),
    nodeSelector: z
      .record(z.string(), z.string().meta({ description: 'Required label value.' }))
      .optional()
      .meta({
        description:
          "Labels an AgentNode must carry for the Agent to be scheduled onto it, in addition to the namespace's orchestrator.dev/node-selector annotation (an Agent requiring another value of a key the annotation fixes is Failed, NodePoolConflict).",
      }),
    nodeName: z
      .string()
      .min(1)
      .max(63)
      .regex(DNS_LABEL)
      .optional()
      .meta({ description: "Run on this AgentNode only, bypassing node selection (capacity and the namespace's orchestrator.dev/node-selector annotation are still respected)." }),
    activeDeadlineSeconds: z.int().min(1).optional().meta({ description: 'Seconds the agent may run, counted from status.startTime, before it is terminated (reason DeadlineExceeded).' }),
    idleTimeoutSeconds: z.int().min(1).optional().meta({ description: 'Seconds without a report and without output after which the agent is terminated (reason IdleTimeout).' }),
    ttlSecondsAfterFinished: z.int().min(0).optional().meta({ description: 'Delete the Agent this many seconds after it finished and was cleaned up. Unset: keep it.' }),
    cleanup: cleanupPolicy.optional(),
    resources: resources.optional(),
    children: childLimits.optional(),
    completionChecks: completionChecks.optional(),
    output: outputPolicy.optional(),
    stop: z.boolean().optional().meta({ description: 'Set to true to stop the agent: it is terminated and cleaned up (phase Terminated). Cannot be reverted.' }),
    stopReason: z.string().max(1024).optional().meta({ description: 'Why the agent was stopped; recorded in status.message.' }),
  })
  .strict()
  .meta({ description: 'The desired agent run. Immutable once the Agent is scheduled, except stop and stopReason.' });

/**
 * What an agent may set for a child it spawns: the prompt, the command and the safe part of a spec.
 * The platform sets the rest (node, limits, owner); env takes literal values only; an output cap
 * above the node's limit is lowered to it, as for any Agent.
 */
export const childSpec = agentSpecObject
  .pick({ command: true, workingDir: true, activeDeadlineSeconds: true, idleTimeoutSeconds: true, ttlSecondsAfterFinished: true, cleanup: true, output: true })
  .extend({
    prompt: z
      .string()
      .min(1)
      .max(LIMITS.childPromptLength)
      .meta({ description: `The child's prompt (at most ${LIMITS.childPromptLength} characters).` }),
    env: z
      .array(childEnvVar)
      .max(LIMITS.childEnvItems)
      .superRefine(uniqueBy('name'))
      .optional()
      .meta({
        description: 'Environment variables for the child (literal values only).',
        'x-kubernetes-list-type': 'map',
        'x-kubernetes-list-map-keys': ['name'],
      }),
  })
  .strict()
  .meta({ description: 'The part of a spec an agent may set for a child.' });

/** A child Agent's name: a DNS label, so it can also be a label value (the parent and root labels). */
export const childAgentName = z
  .string()
  .min(1)
  .max(63)
  .regex(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/)
  .meta({ description: 'Name of the child Agent (at most 63 characters: it is also a label value on its own children).' });

const spawnRequest = z
  .object({
    name: childAgentName,
    requestTime: timestamp('When the agent asked (again: a retried refused request is judged afresh).'),
    spec: childSpec,
  })
  .strict()
  .meta({ description: 'A child the agent asked for through its node; the controller creates it or records a refusal.' });
export type SpawnRequest = z.infer<typeof spawnRequest>;

const stopRequest = z
  .object({
    name: childAgentName,
    reason: z.string().max(1024).optional().meta({ description: "Why; becomes the child's spec.stopReason." }),
    requestTime: timestamp('When the agent asked.'),
  })
  .strict()
  .meta({ description: 'A child the agent asked to stop; the controller sets its spec.stop.' });
export type StopRequest = z.infer<typeof stopRequest>;

const childSummary = z
  .object({
    name: childAgentName,
    uid: z.string().max(64).optional().meta({ description: 'UID of the child once the controller has seen it created; absent while its creation is in flight.' }),
    nodeName: z.string().max(63).optional().meta({ description: 'The AgentNode the child is bound to.' }),
    phase: z.enum(PHASES).optional().meta({ description: "The child's phase." }),
    reason: z.string().max(256).optional().meta({ description: "The child's reason." }),
    message: z.string().max(LIMITS.childMessageLength).optional().meta({ description: "The child's message (truncated)." }),
    progress: z.int().min(0).max(100).optional().meta({ description: "The child's last reported progress." }),
    findings: z.int().min(0).optional().meta({ description: 'Findings the child reported.' }),
  })
  .strict()
  .meta({ description: "A child Agent's summary, mirrored from its status." });
export type ChildSummary = z.infer<typeof childSummary>;

const childRefusal = z
  .object({
    name: childAgentName,
    requestTime: timestamp('The request this refusal answers.'),
    field: z.string().max(128).meta({ description: 'The limit or field that refused it, e.g. spec.children.maxConcurrent.' }),
    message: z.string().max(1024).meta({ description: 'Why the child was not created.' }),
  })
  .strict()
  .meta({ description: 'A spawn request the controller refused.' });
export type ChildRefusal = z.infer<typeof childRefusal>;

const childrenStatus = z
  .object({
    active: z.int().min(0).meta({ description: 'Children not finished (as a Job counts active Pods).' }),
    succeeded: z.int().min(0).meta({ description: 'Children that ended Completed.' }),
    failed: z.int().min(0).meta({ description: 'Children that ended Failed, Error or Terminated.' }),
    agents: z
      .array(childSummary)
      .max(LIMITS.childrenMaxTotal)
      .superRefine(uniqueBy('name'))
      .optional()
      .meta({ description: 'Every child created, finished and deleted ones included.', 'x-kubernetes-list-type': 'map', 'x-kubernetes-list-map-keys': ['name'] }),
    refused: z
      .array(childRefusal)
      .max(LIMITS.spawnRequests)
      .superRefine(uniqueBy('name'))
      .optional()
      .meta({ description: 'Spawn requests refused, the latest per name.', 'x-kubernetes-list-type': 'map', 'x-kubernetes-list-map-keys': ['name'] }),
  })
  .strict()
  .meta({ description: "This agent's children, as the controller last saw them." });
export type ChildrenStatus = z.infer<typeof childrenStatus>;

/** Spec fields an admin may still change after scheduling. */
export const MUTABLE_SPEC_FIELDS = ['stop', 'stopReason'] as const;
const IMMUTABLE_SPEC_FIELDS = Object.keys(agentSpecObject.shape).filter((k) => !(MUTABLE_SPEC_FIELDS as readonly string[]).includes(k)) as (keyof z.infer<typeof agentSpecObject>)[];

export const agentSpec = withRules(
  agentSpecObject,
  [
    {
      rule: 'has(self.prompt) != has(self.promptFrom)',
      message: 'exactly one of spec.prompt or spec.promptFrom must be set',
      check: (v) => has(v, 'prompt') !== has(v, 'promptFrom'),
    },
  ],
  [
    {
      rule: '!has(oldSelf.stop) || !oldSelf.stop || (has(self.stop) && self.stop)',
      message: 'spec.stop cannot be reverted once true',
      fieldPath: '.stop',
      check: (v, old) => !old.stop || v.stop === true,
    },
  ],
);

const finding = z
  .object({
    type: z.string().max(128).meta({ description: 'Kind of finding, as reported by the agent.' }),
    severity: z.string().max(32).meta({ description: 'Severity, as reported by the agent (e.g. info, low, medium, high, critical).' }),
    message: z.string().max(1024).meta({ description: 'What was found (truncated to 1024 characters).' }),
    time: timestamp('When it was reported.'),
  })
  .strict()
  .meta({ description: 'One finding reported by the agent.' });

const archivedFile = z
  .object({
    name: z.string().max(256).meta({ description: 'File name within the archive directory.' }),
    bytes: z.int().min(0).meta({ description: 'Size in bytes.' }),
    sha256: z.string().max(64).meta({ description: 'SHA-256 of the content, hex.' }),
  })
  .strict()
  .meta({ description: 'One archived file.' });

export const cleanupRecord = z
  .object({
    trigger: z.string().max(128).optional().meta({ description: 'What ended the agent and started the cleanup.' }),
    startTime: timestamp('When the node began cleaning up.'),
    completionTime: timestamp('When the cleanup finished.').optional(),
    durationMilliseconds: z.int().min(0).optional().meta({ description: 'How long the cleanup took.' }),
    sessionKilled: z.boolean().meta({ description: 'The tmux session was killed (or was already gone).' }),
    processesKilled: z.int().min(0).meta({ description: 'Processes of the agent that were signalled.' }),
    escalatedToSigkill: z.boolean().meta({ description: 'Some process outlived SIGTERM and the grace period and got SIGKILL.' }),
    promptDeleted: z.boolean().meta({ description: 'The prompt file was deleted.' }),
    workspaceDeleted: z.boolean().optional().meta({ description: 'The workspace scratch was deleted.' }),
    logsArchived: z.boolean().meta({ description: 'Output and reports were archived (and verified) before deletion.' }),
    archivePath: z.string().max(4096).optional().meta({ description: "Archive directory on the node's archive volume." }),
    archivedFiles: z.array(archivedFile).max(LIMITS.archivedFiles).optional().meta({ description: 'Files in the archive with sizes and checksums (also in its manifest.json).' }),
    verifiedNoProcesses: z.boolean().meta({
      description: "No process of the agent is left: its cgroup reports `populated 0` (a kernel fact) and no process carries the agent's marker.",
    }),
    cpuMilliseconds: z.int().min(0).optional().meta({ description: "CPU time the agent's processes used (its cgroup's cpu.stat)." }),
    memoryPeakBytes: z.int().min(0).optional().meta({ description: "Peak memory of the agent's processes (its cgroup's memory.peak), where the memory controller is enabled." }),
    cgroupRemoved: z.boolean().optional().meta({ description: "The agent's cgroup was removed." }),
    output: z
      .object({
        maxBytes: z.int().min(0).meta({ description: "The cap in force: the most of its output the node kept (spec.output.maxSize, else the node's default, never above the node's limit)." }),
        totalBytes: z.int().min(0).meta({ description: 'Bytes the agent printed (what its output capture read).' }),
        droppedBytes: z.int().min(0).meta({ description: 'Bytes kept neither in the head (output.log) nor in the tail (output-tail.log).' }),
        truncated: z.boolean().meta({ description: 'Some output was dropped: the archive holds its head and its tail, not all of it.' }),
      })
      .strict()
      .optional()
      .meta({ description: 'What the output capture saw and kept.' }),
    errors: z
      .array(z.string().max(1024).meta({ description: 'What failed and why.' }))
      .max(LIMITS.cleanupErrors)
      .optional()
      .meta({ description: 'Steps that failed; empty when everything succeeded.' }),
  })
  .strict()
  .meta({ description: 'What the node did to clean up after the agent.' });

export type CleanupRecord = z.infer<typeof cleanupRecord>;

export const agentStatus = z
  .object({
    phase: z
      .enum(PHASES)
      .optional()
      .meta({ description: `Lifecycle phase: ${PHASES.join(', ')}.` }),
    reason: z.string().max(256).optional().meta({ description: 'CamelCase reason for the phase.' }),
    message: z.string().max(LIMITS.messageLength).optional().meta({ description: 'Human readable detail of the phase.' }),
    progress: z.int().min(0).max(100).optional().meta({ description: 'Progress in percent, as last reported by the agent.' }),
    nodeName: z.string().max(63).optional().meta({
      description: 'The AgentNode the Agent is bound to: a copy of the orchestrator.dev/node label, the binding the controller records (a different value written here is put back, never followed).',
    }),
    sessionName: z.string().max(128).optional().meta({ description: 'The tmux session running the agent on its node.' }),
    scheduledTime: timestamp('When the Agent was bound to a node.').optional(),
    startTime: timestamp("When the agent's session started.").optional(),
    completionTime: timestamp('When the agent ended.').optional(),
    exitCode: z.int().optional().meta({ description: 'Exit code of the agent command, once it exited.' }),
    lastReportTime: timestamp('When the agent last reported.').optional(),
    lastOutputTime: timestamp('When the agent last wrote output (updated at a coarse interval).').optional(),
    reportedState: z.enum(REPORTED_STATES).optional().meta({ description: 'The state the agent last reported about itself.' }),
    reportedMessage: z.string().max(LIMITS.messageLength).optional().meta({ description: 'The message the agent last reported.' }),
    launchError: z.string().max(LIMITS.messageLength).optional().meta({ description: 'Why the node could not start the agent.' }),
    limitsNotEnforced: z.array(z.enum(LIMIT_CONTROLLERS)).max(LIMIT_CONTROLLERS.length).optional().meta({
      description:
        'spec.resources.limits the node could not enforce (its cgroup v2 has no such controller): the agent runs without them. Written by the node; the controller records a LimitsNotEnforced Warning Event.',
    }),
    outputMaxBytes: z.int().min(0).optional().meta({
      description:
        "The most of the agent's output its node keeps, as launched: spec.output.maxSize, else the node's --output-max-size, lowered to its --output-max-size-limit. Written by the node; the controller records an OutputCapLowered Warning Event when it is below spec.output.maxSize.",
    }),
    sessionLost: z
      .string()
      .max(LIMITS.messageLength)
      .optional()
      .meta({ description: "Set when the agent's session vanished while its command ran (tmux server killed, node rebooted): what the node saw." }),
    findings: z
      .object({
        total: z.int().min(0).meta({ description: 'Number of findings reported.' }),
        bySeverity: z
          .record(z.string(), z.int().min(0).meta({ description: 'Findings of this severity.' }))
          .optional()
          .meta({ description: 'Counts per severity.' }),
        recent: z.array(finding).max(LIMITS.recentFindings).optional().meta({ description: 'The latest findings (all are in the archived findings.jsonl).' }),
      })
      .strict()
      .optional()
      .meta({ description: 'Summary of the findings the agent reported.' }),
    cleanup: cleanupRecord.optional(),
    progressReports: z.int().min(0).optional().meta({ description: 'Progress reports (working or blocked) the agent made; spec.completionChecks counts them.' }),
    spawnRequests: z
      .array(spawnRequest)
      .max(LIMITS.spawnRequests)
      .superRefine(uniqueBy('name'))
      .optional()
      .meta({
        description: 'Children the agent asked its node for (written by the node; the controller acts on them).',
        'x-kubernetes-list-type': 'map',
        'x-kubernetes-list-map-keys': ['name'],
      }),
    stopRequests: z
      .array(stopRequest)
      .max(LIMITS.childrenMaxTotal)
      .superRefine(uniqueBy('name'))
      .optional()
      .meta({
        description: 'Children the agent asked its node to stop (written by the node; the controller acts on them).',
        'x-kubernetes-list-type': 'map',
        'x-kubernetes-list-map-keys': ['name'],
      }),
    children: childrenStatus.optional(),
    conditions,
    observedGeneration: z.int().min(0).optional().meta({ description: 'The .metadata.generation the controller last acted on; 0 until it first acts on the Agent (the schema default).' }),
  })
  .strict()
  .meta({ description: 'Observed state of the Agent. The controller writes phase, conditions and binding; the node writes what it observes.' });

const specField = (f: string) => `(has(self.spec.${f}) == has(oldSelf.spec.${f}) && (!has(self.spec.${f}) || self.spec.${f} == oldSelf.spec.${f}))`;

/** The whole Agent object. The root carries the rule that freezes the spec once scheduled. */
export const agentSchema = withRules(
  z
    .object({
      apiVersion: z.string().optional(),
      kind: z.string().optional(),
      metadata: objectMeta.optional(),
      spec: agentSpec,
      status: agentStatus.optional(),
    })
    .strict(),
  [],
  [
    {
      rule: `!has(oldSelf.status) || !has(oldSelf.status.nodeName) || (${IMMUTABLE_SPEC_FIELDS.map(specField).join(' && ')})`,
      message: `spec is immutable once the Agent is scheduled, except ${MUTABLE_SPEC_FIELDS.join(' and ')}`,
      fieldPath: '.spec',
      check: (v, old) => !old.status?.nodeName || IMMUTABLE_SPEC_FIELDS.every((f) => isDeepStrictEqual(v.spec[f], old.spec[f])),
    },
  ],
);

export type AgentSpec = z.infer<typeof agentSpec>;
export type AgentStatus = z.infer<typeof agentStatus>;
export type Agent = z.infer<typeof agentSchema>;
export type EnvVar = z.infer<typeof envVar>;

/** Human-readable list of zod issues, each naming its field (`spec.env[0].name: ...`). */
export function formatIssues(error: z.ZodError, prefix = ''): string {
  return error.issues
    .map((i) => {
      const path = i.path.reduce<string>((acc, seg) => (typeof seg === 'number' ? `${acc}[${seg}]` : acc ? `${acc}.${String(seg)}` : String(seg)), prefix);
      return `${path || '<root>'}: ${i.message}`;
    })
    .join('; ');
}

export type Validated<T> = { ok: true; value: T } | { ok: false; message: string };

/** Validates a spec as the controller receives it; the message names every offending field. */
export function validateSpec(spec: unknown): Validated<AgentSpec> {
  const r = agentSpec.safeParse(spec);
  return r.success ? { ok: true, value: r.data } : { ok: false, message: formatIssues(r.error, 'spec') };
}
