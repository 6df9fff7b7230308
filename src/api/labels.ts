/** Label sets written as text (`k=v,k2=v2`), as the sidecar's --labels and the node-selector annotation take them. */

const KEY = /^([a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?\/)?[a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?$/;
const VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$/;

export class LabelSyntaxError extends Error {}

/** Parses `k=v,k2=v2` (empty text: no labels); the error names the offending key or value. */
export function parseLabelSet(text: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of (text ?? '')
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean)) {
    const i = pair.indexOf('=');
    const [k, v] = i < 0 ? [pair, ''] : [pair.slice(0, i), pair.slice(i + 1)];
    if (!KEY.test(k) || k.length > 316) throw new LabelSyntaxError(`"${k}" is not a valid label key`);
    if (v.length > 63 || !VALUE.test(v)) throw new LabelSyntaxError(`"${v}" is not a valid label value (for ${k})`);
    out[k] = v;
  }
  return out;
}

/** Whether `labels` carry every key of `selector` with its value (an equality-based selector). */
export function matchesLabels(selector: Record<string, string> | undefined, labels: Record<string, string>): boolean {
  return Object.entries(selector ?? {}).every(([k, v]) => labels[k] === v);
}
