/** Generates the CustomResourceDefinitions from the zod schemas (the single source of truth). */
import { z } from 'zod';
import { stringify } from 'yaml';
import { agentSpec, agentStatus, agentSchema } from './agent.js';
import { agentNodeSpec, agentNodeStatus } from './agentNode.js';
import { AGENT_KIND, AGENT_NODE_KIND, AGENT_NODE_PLURAL, AGENT_NODE_SINGULAR, AGENT_PLURAL, AGENT_SINGULAR, GROUP, VERSION } from './constants.js';

type JsonSchema = Record<string, unknown>;

/**
 * zod's OpenAPI 3.0 output, made structural for Kubernetes: no `additionalProperties: false`
 * (unknown fields are rejected by strict field validation, which names them), no JavaScript-only
 * integer bounds.
 */
export function toStructural(schema: z.ZodType): JsonSchema {
  const json = z.toJSONSchema(schema, { target: 'openapi-3.0', unrepresentable: 'throw', io: 'input' }) as JsonSchema;
  delete json.$schema;
  return clean(json) as JsonSchema;
}

function clean(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(clean);
  if (node === null || typeof node !== 'object') return node;
  const out: JsonSchema = {};
  for (const [k, v] of Object.entries(node)) {
    if (k === 'additionalProperties' && v === false) continue;
    if (k === 'maximum' && v === Number.MAX_SAFE_INTEGER) continue;
    if (k === 'minimum' && v === Number.MIN_SAFE_INTEGER) continue;
    out[k] = clean(v);
  }
  return out;
}

interface PrinterColumn {
  name: string;
  type: string;
  jsonPath: string;
  description?: string;
  priority?: number;
}

function crd(opts: {
  kind: string;
  plural: string;
  singular: string;
  shortNames: string[];
  /**
   * `kubectl get <category>` lists every kind in it. A category spelled like a plural shadows the
   * resource (`kubectl get agents` expands the category), so `agents` holds the Agent kind alone.
   */
  categories: string[];
  scope: 'Namespaced' | 'Cluster';
  description: string;
  spec: z.ZodType;
  status: z.ZodType;
  /** The API server's default for a missing status (applied on every read). */
  statusDefault?: JsonSchema;
  specRequired: boolean;
  rootRules: unknown[];
  columns: PrinterColumn[];
}) {
  const root: JsonSchema = {
    type: 'object',
    description: opts.description,
    properties: {
      apiVersion: { type: 'string', description: 'APIVersion defines the versioned schema of this representation of an object.' },
      kind: { type: 'string', description: 'Kind is a string value representing the REST resource this object represents.' },
      metadata: { type: 'object' },
      spec: toStructural(opts.spec),
      status: { ...toStructural(opts.status), ...(opts.statusDefault ? { default: opts.statusDefault } : {}) },
    },
  };
  if (opts.specRequired) root.required = ['spec'];
  if (opts.rootRules.length > 0) root['x-kubernetes-validations'] = opts.rootRules;
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name: `${opts.plural}.${GROUP}` },
    spec: {
      group: GROUP,
      names: {
        kind: opts.kind,
        listKind: `${opts.kind}List`,
        plural: opts.plural,
        singular: opts.singular,
        shortNames: opts.shortNames,
        categories: opts.categories,
      },
      scope: opts.scope,
      versions: [
        {
          name: VERSION,
          served: true,
          storage: true,
          subresources: { status: {} },
          additionalPrinterColumns: opts.columns,
          schema: { openAPIV3Schema: root },
        },
      ],
    },
  };
}

function rootRulesOf(schema: z.ZodType): unknown[] {
  const meta = schema.meta();
  return (meta?.['x-kubernetes-validations'] as unknown[] | undefined) ?? [];
}

export function agentCrd() {
  return crd({
    kind: AGENT_KIND,
    plural: AGENT_PLURAL,
    singular: AGENT_SINGULAR,
    shortNames: ['ag'],
    categories: ['agents', 'orchestrator'],
    scope: 'Namespaced',
    description:
      'An Agent runs an AI coding agent (or any CLI) in a tmux session on a node. When it ends, its processes, session, prompt file and workspace are cleaned up and its logs archived; status.cleanup records what was done.',
    spec: agentSpec,
    status: agentStatus,
    // Before the controller first writes status, kstatus (Flux, kpt) would call an Agent without
    // one Current: observedGeneration 0 < generation says "not reconciled yet" instead.
    statusDefault: { observedGeneration: 0 },
    specRequired: true,
    rootRules: rootRulesOf(agentSchema),
    columns: [
      { name: 'Phase', type: 'string', jsonPath: '.status.phase', description: 'Lifecycle phase' },
      { name: 'Node', type: 'string', jsonPath: '.status.nodeName', description: 'AgentNode it runs on' },
      { name: 'Progress', type: 'integer', jsonPath: '.status.progress', description: 'Reported progress (%)' },
      { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' },
      { name: 'Reason', type: 'string', jsonPath: '.status.reason', priority: 1 },
      { name: 'Message', type: 'string', jsonPath: '.status.message', priority: 1 },
    ],
  });
}

export function agentNodeCrd() {
  return crd({
    kind: AGENT_NODE_KIND,
    plural: AGENT_NODE_PLURAL,
    singular: AGENT_NODE_SINGULAR,
    shortNames: ['agn'],
    categories: ['orchestrator'],
    scope: 'Cluster',
    description: 'An AgentNode is a node that runs Agents, registered and heartbeated by its node sidecar (as a kubelet does for a Node).',
    spec: agentNodeSpec,
    status: agentNodeStatus,
    specRequired: false,
    rootRules: [],
    columns: [
      { name: 'Ready', type: 'string', jsonPath: '.status.conditions[?(@.type=="Ready")].status' },
      { name: 'Capacity', type: 'integer', jsonPath: '.status.capacity' },
      { name: 'Running', type: 'integer', jsonPath: '.status.running' },
      { name: 'Unschedulable', type: 'boolean', jsonPath: '.spec.unschedulable', priority: 1 },
      { name: 'Heartbeat', type: 'date', jsonPath: '.status.lastHeartbeatTime', priority: 1 },
      { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' },
    ],
  });
}

export const CRD_FILES = {
  [`${AGENT_PLURAL}.${GROUP}.yaml`]: agentCrd,
  [`${AGENT_NODE_PLURAL}.${GROUP}.yaml`]: agentNodeCrd,
} as const;

const HEADER = '# Generated from src/api by `npm run gen:crds`. Do not edit by hand.\n';

export function renderCrd(obj: unknown): string {
  return HEADER + stringify(obj, { lineWidth: 0 });
}
