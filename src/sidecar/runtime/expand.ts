/**
 * Kubernetes `$(VAR)` expansion (k8s.io/kubernetes third_party/forked/golang/expansion), for the
 * command and for env values, so an Agent spec means what the same Pod spec would mean:
 *  - `$(NAME)` is replaced by NAME's value when NAME is defined, and left as written otherwise;
 *  - `$$` is an escaped `$` (so `$$(NAME)` yields the literal `$(NAME)`);
 *  - any other `$`, and an unclosed `$(`, are kept literally.
 * One deliberate difference: Go works on bytes and mangles a non-ASCII character after `$`; here
 * it is kept as written.
 */

/** Expands one string against `lookup`. */
export function expandString(input: string, lookup: (name: string) => string | undefined): string {
  let out = '';
  let checkpoint = 0;
  for (let cursor = 0; cursor < input.length; cursor++) {
    if (input[cursor] !== '$' || cursor + 1 >= input.length) continue;
    out += input.slice(checkpoint, cursor);
    const next = input[cursor + 1];
    if (next === '$') {
      out += '$';
      cursor += 1;
    } else if (next === '(') {
      const close = input.indexOf(')', cursor + 2);
      if (close === -1) {
        out += '$(';
        cursor += 1;
      } else {
        const name = input.slice(cursor + 2, close);
        out += lookup(name) ?? `$(${name})`;
        cursor = close;
      }
    } else {
      out += `$${next}`;
      cursor += 1;
    }
    checkpoint = cursor + 1;
  }
  return out + input.slice(checkpoint);
}

const lookupIn = (env: Readonly<Record<string, string>>) => (name: string) => (Object.prototype.hasOwnProperty.call(env, name) ? env[name] : undefined);

/** The command (or args) with `$(VAR)` references to `env` expanded, as the kubelet does. */
export function expandArgs(args: readonly string[], env: Readonly<Record<string, string>>): string[] {
  const lookup = lookupIn(env);
  return args.map((a) => expandString(a, lookup));
}

export interface EnvEntry {
  name: string;
  value: string;
  /**
   * Whether `$(VAR)` in the value is expanded. The kubelet expands literal `value`s only; values
   * from a Secret or ConfigMap (`valueFrom`) are taken verbatim. Default true.
   */
  expand?: boolean;
}

/**
 * Resolves an ordered env list: each value may reference `base` and the entries before it (a later
 * entry with the same name replaces an earlier one). Returns the variables in definition order.
 */
export function expandEnv(entries: readonly EnvEntry[], base: Readonly<Record<string, string>> = {}): Record<string, string> {
  const known: Record<string, string> = { ...base };
  const result: Record<string, string> = {};
  const lookup = lookupIn(known);
  for (const e of entries) {
    const value = e.expand === false ? e.value : expandString(e.value, lookup);
    known[e.name] = value;
    result[e.name] = value;
  }
  return result;
}
