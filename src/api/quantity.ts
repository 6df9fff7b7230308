/**
 * Kubernetes resource quantities, the subset Agent limits use: a decimal number with an optional
 * binary (Ki, Mi, Gi, Ti, Pi, Ei), decimal (k, M, G, T, P, E) or milli (m) suffix.
 */
export const QUANTITY_PATTERN = '^[0-9]+(\\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$';
const QUANTITY = new RegExp(QUANTITY_PATTERN);

const FACTORS: Record<string, number> = {
  '': 1,
  m: 1e-3,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
  E: 1e18,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
  Pi: 2 ** 50,
  Ei: 2 ** 60,
};

/** The value of a quantity (pure); throws naming the field on anything else. */
export function parseQuantity(text: string, field: string): number {
  const m = QUANTITY.exec(text);
  if (!m) throw new Error(`${field}: ${JSON.stringify(text)} is not a quantity (e.g. 512Mi, 2, 500m)`);
  const suffix = m[2] ?? '';
  return Number(text.slice(0, text.length - suffix.length)) * FACTORS[suffix]!;
}

/** Bytes, rounded up (pure). */
export const bytesOf = (text: string, field: string) => Math.ceil(parseQuantity(text, field));

/** CPU in millicores, rounded up, at least 1 (pure). */
export const milliCpuOf = (text: string, field: string) => Math.max(1, Math.ceil(parseQuantity(text, field) * 1000));
