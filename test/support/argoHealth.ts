/**
 * Runs the Argo CD health check (deploy/gitops/argocd-health.lua) the way Argo CD does: the object
 * as a Lua table in the global `obj`, the script's return value the health, in a real Lua 5.1
 * interpreter (Argo CD's gopher-lua speaks 5.1).
 */
import { join } from 'node:path';
import { execa } from 'execa';
import { PACKAGE_ROOT } from '../../src/dev/paths.js';

export const ARGO_HEALTH_SCRIPT = join(PACKAGE_ROOT, 'deploy', 'gitops', 'argocd-health.lua');

/** Argo CD's health statuses. */
export type ArgoHealthStatus = 'Healthy' | 'Progressing' | 'Degraded' | 'Suspended' | 'Missing' | 'Unknown';

export interface ArgoHealth {
  status: ArgoHealthStatus;
  message: string;
}

/** A Lua 5.1 string literal: quotes, backslashes and control characters escaped; other bytes as they are. */
export function luaString(s: string): string {
  // Matching control characters is the point here: they are what must be escaped.
  // eslint-disable-next-line no-control-regex
  const escaped = s.replace(/[\\"\x00-\x1f\x7f]/g, (c) => {
    if (c === '\\') return '\\\\';
    if (c === '"') return '\\"';
    if (c === '\n') return '\\n';
    // \ddd is decimal in Lua; three digits so a following digit is not read into it.
    return `\\${c.charCodeAt(0).toString().padStart(3, '0')}`;
  });
  return `"${escaped}"`;
}

/** JSON as Argo CD hands it to a script: objects and arrays as tables (arrays from 1), null as nil. */
export function toLua(v: unknown): string {
  if (v === null || v === undefined) return 'nil';
  if (typeof v === 'string') return luaString(v);
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw new Error(`not a JSON number: ${v}`);
    return String(v);
  }
  if (typeof v === 'boolean') return String(v);
  if (Array.isArray(v)) return `{${v.map(toLua).join(', ')}}`;
  if (typeof v === 'object') {
    return `{${Object.entries(v as Record<string, unknown>)
      .map(([k, x]) => `[${luaString(k)}] = ${toLua(x)}`)
      .join(', ')}}`;
  }
  throw new Error(`cannot express a ${typeof v} in Lua`);
}

/** The health Argo CD would show for `obj`, computed by the shipped script. */
export async function argoHealth(obj: unknown, script = ARGO_HEALTH_SCRIPT): Promise<ArgoHealth> {
  const harness = [`obj = ${toLua(obj)}`, `local hs = dofile(${luaString(script)})`, 'io.write(tostring(hs.status), "\\n", tostring(hs.message or ""))'].join('\n');
  const r = await execa('lua5.1', ['-'], { input: harness, timeout: 10_000, reject: false });
  if (r.failed) throw new Error(`lua5.1 ${script} failed (${r.timedOut ? 'timed out' : `exit ${r.exitCode}`}): ${r.stderr || r.message}`);
  const nl = r.stdout.indexOf('\n');
  return { status: r.stdout.slice(0, nl) as ArgoHealthStatus, message: r.stdout.slice(nl + 1) };
}
