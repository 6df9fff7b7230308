/** Renders the API reference (docs/api.md) from the same schemas the CRDs are generated from. */
import { agentCrd, agentNodeCrd } from './crd.js';

type Schema = {
  type?: string;
  description?: string;
  properties?: Record<string, Schema>;
  items?: Schema;
  additionalProperties?: Schema;
  required?: string[];
  enum?: unknown[];
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: boolean;
  minLength?: number;
  maxLength?: number;
  minItems?: number;
  maxItems?: number;
  pattern?: string;
  format?: string;
  'x-kubernetes-validations'?: { rule: string; message: string }[];
};

function typeOf(s: Schema): string {
  if (s.type === 'array') return `[]${s.items ? typeOf(s.items) : 'any'}`;
  if (s.type === 'object' && s.additionalProperties) return `map[string]${typeOf(s.additionalProperties)}`;
  return s.format ? `${s.type} (${s.format})` : (s.type ?? 'any');
}

function constraints(s: Schema, required: boolean): string {
  const c: string[] = [];
  if (required) c.push('required');
  if (s.enum) c.push(`one of ${s.enum.map((e) => `\`${String(e)}\``).join(', ')}`);
  if (s.minimum !== undefined) c.push(`${s.exclusiveMinimum ? '>' : '>='} ${s.minimum}`);
  if (s.maximum !== undefined) c.push(`<= ${s.maximum}`);
  if (s.minLength !== undefined && s.minLength > 0) c.push(`min length ${s.minLength}`);
  if (s.maxLength !== undefined) c.push(`max length ${s.maxLength}`);
  if (s.minItems !== undefined && s.minItems > 0) c.push(`min items ${s.minItems}`);
  if (s.maxItems !== undefined) c.push(`max items ${s.maxItems}`);
  if (s.pattern) c.push(`pattern \`${s.pattern}\``);
  for (const v of s['x-kubernetes-validations'] ?? []) c.push(v.message);
  return c.join('; ');
}

const cell = (s: string) => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');

function rows(s: Schema, path: string, out: string[]): void {
  for (const [name, child] of Object.entries(s.properties ?? {})) {
    const p = `${path}.${name}`;
    out.push(`| \`${p}\` | ${cell(typeOf(child))} | ${cell(child.description ?? '')} | ${cell(constraints(child, s.required?.includes(name) ?? false))} |`);
    const inner = child.type === 'array' ? child.items : child;
    if (inner?.properties) rows(inner, child.type === 'array' ? `${p}[]` : p, out);
  }
}

function section(crd: ReturnType<typeof agentCrd>): string {
  const v = crd.spec.versions[0]!;
  const root = v.schema.openAPIV3Schema as Schema;
  const out = [
    `## ${crd.spec.names.kind} (\`${crd.spec.group}/${v.name}\`, ${crd.spec.scope === 'Namespaced' ? 'namespaced' : 'cluster-scoped'}, short name \`${crd.spec.names.shortNames.join(', ')}\`)`,
    '',
    root.description ?? '',
    '',
  ];
  for (const rule of root['x-kubernetes-validations'] ?? []) out.push(`Rule: ${rule.message}.`, '');
  for (const part of ['spec', 'status'] as const) {
    const s = root.properties?.[part];
    if (!s) continue;
    out.push(`### ${part}`, '', s.description ?? '', '', '| field | type | description | constraints |', '| --- | --- | --- | --- |');
    for (const rule of s['x-kubernetes-validations'] ?? []) out.push(`| \`${part}\` | object | | ${cell(rule.message)} |`);
    rows(s, part, out);
    out.push('');
  }
  out.push('Printer columns: ' + v.additionalPrinterColumns.map((c) => `${c.name.toUpperCase()}${c.priority ? ' (wide)' : ''}`).join(', ') + '.', '');
  return out.join('\n');
}

export function renderApiDocs(): string {
  return [
    '<!-- Generated from src/api by `npm run gen:crds`. Do not edit by hand. -->',
    '# API reference',
    '',
    'Also available from the cluster: `kubectl explain agent.spec`, `kubectl explain agent.status.cleanup`.',
    '',
    section(agentCrd()),
    section(agentNodeCrd()),
  ].join('\n');
}
