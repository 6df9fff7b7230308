/** Merges options over defaults; an option given as undefined keeps the default. */
export function withDefaults<D extends object, O extends object>(defaults: D, options: O): O & D {
  const out = { ...defaults } as Record<string, unknown>;
  for (const [k, v] of Object.entries(options)) if (v !== undefined) out[k] = v;
  return out as O & D;
}
