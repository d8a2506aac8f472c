/**
 * Every JSON blob tsbuild writes goes through here so that the same value always gives the same
 * bytes (and so the same digest): object keys are sorted, undefined members are dropped, no
 * whitespace.
 */
export function canonicalJson(value: unknown): Buffer {
  return Buffer.from(canonicalString(value), 'utf8');
}

export function canonicalString(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map((v) => (v === undefined ? null : sortKeys(v)));
  if (value !== null && typeof value === 'object') {
    const src = value as Record<string, unknown>;
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(src).sort()) {
      const v = src[k];
      if (v !== undefined) out[k] = sortKeys(v);
    }
    return out;
  }
  return value;
}
