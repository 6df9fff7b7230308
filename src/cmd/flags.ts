/** Flag parsing shared by the long-running entrypoints: errors that name the flag, and help text. */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { bytesOf } from '../api/quantity.js';

export class UsageError extends Error {}

export type FlagSpec = Record<string, { type: 'string' | 'boolean'; default?: string | boolean; help: string; short?: string }>;

export function parseFlags(argv: string[], spec: FlagSpec): Record<string, string | boolean | undefined> {
  const options: ParseArgsConfig['options'] = { help: { type: 'boolean', short: 'h' } };
  for (const [name, f] of Object.entries(spec)) {
    options[name] = { type: f.type, ...(f.short ? { short: f.short } : {}), ...(f.default !== undefined ? { default: f.default } : {}) };
  }
  try {
    const { values, positionals } = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
    if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`);
    return values as Record<string, string | boolean | undefined>;
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw new UsageError(err instanceof Error ? err.message : String(err));
  }
}

export function helpText(usage: string, spec: FlagSpec): string {
  const rows = Object.entries(spec).map(([name, f]) => {
    const flag = `--${name}${f.type === 'string' ? ' VALUE' : ''}`;
    const def = f.default !== undefined && f.default !== false ? ` (default ${String(f.default)})` : '';
    return `  ${flag.padEnd(36)} ${f.help}${def}`;
  });
  return `${usage}\n\nOptions:\n${rows.join('\n')}\n  ${'-h, --help'.padEnd(36)} show this help`;
}

/** A whole number flag, with bounds; the error names the flag. */
export function intFlag(values: Record<string, unknown>, name: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const raw = values[name];
  const n = Number(raw);
  if (typeof raw !== 'string' || !/^-?\d+$/.test(raw) || n < min || n > max) {
    throw new UsageError(`--${name}: expected a whole number from ${min} to ${max}, got "${String(raw)}"`);
  }
  return n;
}

/** A size flag as a Kubernetes quantity (10Mi, 2G, 4096), in bytes, at least `min`; the error names the flag. */
export function sizeFlag(values: Record<string, unknown>, name: string, min: number): number {
  const raw = String(values[name]);
  let n: number;
  try {
    n = bytesOf(raw, `--${name}`);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (n < min || !Number.isSafeInteger(n)) throw new UsageError(`--${name}: expected at least ${min} bytes, got "${raw}"`);
  return n;
}

/** Resolves on the first SIGINT or SIGTERM, and removes its handlers then. */
export function untilSignal(): { promise: Promise<NodeJS.Signals>; dispose(): void } {
  let dispose = () => {};
  const promise = new Promise<NodeJS.Signals>((resolve) => {
    const on = (sig: NodeJS.Signals) => () => {
      dispose();
      resolve(sig);
    };
    const int = on('SIGINT');
    const term = on('SIGTERM');
    process.on('SIGINT', int);
    process.on('SIGTERM', term);
    dispose = () => {
      process.off('SIGINT', int);
      process.off('SIGTERM', term);
    };
  });
  return { promise, dispose };
}
