import { DockerfileError } from '@tsbuild/errors';

const UNIT_NS: Record<string, bigint> = {
  ns: 1n,
  us: 1_000n,
  'µs': 1_000n,
  'μs': 1_000n,
  ms: 1_000_000n,
  s: 1_000_000_000n,
  m: 60_000_000_000n,
  h: 3_600_000_000_000n,
};

const MAX_NS = BigInt(Number.MAX_SAFE_INTEGER);

/**
 * Parses a Go duration (`30s`, `1m30s`, `1.5h`, `250ms`, `-2s`, `0`) into nanoseconds, with the
 * integer arithmetic Go uses so `1.1s` is exactly 1100000000. Image configs store health-check
 * times as nanosecond integers; values past 2^53 ns (~104 days) are refused rather than rounded.
 */
export function parseDuration(text: string): number {
  const invalid = (): DockerfileError => new DockerfileError(`invalid duration ${JSON.stringify(text)}`);
  let s = text;
  let negative = false;
  if (s.startsWith('-') || s.startsWith('+')) {
    negative = s[0] === '-';
    s = s.slice(1);
  }
  if (s === '0') return 0;
  if (s === '') throw invalid();
  let total = 0n;
  const part = /^(\d*)(?:\.(\d*))?([^\d.]+)/u;
  while (s !== '') {
    const m = part.exec(s);
    if (!m) throw invalid();
    const [whole, int = '', frac = '', unitText = ''] = m;
    if (int === '' && frac === '') throw invalid();
    const unit = UNIT_NS[unitText];
    if (unit === undefined) {
      throw new DockerfileError(`invalid duration ${JSON.stringify(text)}: unknown unit ${JSON.stringify(unitText)}`);
    }
    let v = BigInt(int || '0') * unit;
    if (frac !== '') v += (BigInt(frac) * unit) / 10n ** BigInt(frac.length);
    total += v;
    if (total > MAX_NS) throw new DockerfileError(`duration ${JSON.stringify(text)} is too long`);
    s = s.slice(whole.length);
  }
  const n = Number(total);
  return negative ? -n : n;
}

/** Formats nanoseconds the way Go's Duration.String does (`1m30s`, `1.5s`, `250ms`). */
export function formatDuration(ns: number): string {
  if (ns === 0) return '0s';
  const sign = ns < 0 ? '-' : '';
  let v = BigInt(Math.abs(ns));
  if (v < 1_000_000_000n) {
    const [unit, div] = v < 1_000n ? ['ns', 1n] : v < 1_000_000n ? ['µs', 1_000n] : ['ms', 1_000_000n];
    return sign + fraction(v, div) + unit;
  }
  const h = v / 3_600_000_000_000n;
  v %= 3_600_000_000_000n;
  const m = v / 60_000_000_000n;
  v %= 60_000_000_000n;
  let out = sign;
  if (h > 0n) out += `${h}h`;
  if (h > 0n || m > 0n) out += `${m}m`;
  return `${out}${fraction(v, 1_000_000_000n)}s`;
}

function fraction(v: bigint, div: bigint): string {
  const int = v / div;
  const rest = v % div;
  if (rest === 0n) return `${int}`;
  const digits = div.toString().length - 1;
  return `${int}.${rest.toString().padStart(digits, '0').replace(/0+$/, '')}`;
}
