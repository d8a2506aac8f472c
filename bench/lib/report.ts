/** Medians, number formatting, and each benchmark's own section of bench/RESULTS.md. */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, totalmem } from 'node:os';

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export const minOf = (xs: readonly number[]): number => (xs.length === 0 ? NaN : Math.min(...xs));
export const maxOf = (xs: readonly number[]): number => (xs.length === 0 ? NaN : Math.max(...xs));

/** Milliseconds as seconds with two decimals; `–` for nothing measured. */
export function secs(ms: number): string {
  return Number.isNaN(ms) ? '–' : (ms / 1000).toFixed(2);
}

export function ratio(a: number, b: number): string {
  return Number.isNaN(a) || Number.isNaN(b) ? '–' : `${(a / b).toFixed(2)}×`;
}

/** Bytes in the unit that keeps three significant figures readable (B, kB, MB: powers of 1000). */
export function bytes(n: number): string {
  if (Number.isNaN(n)) return '–';
  if (n < 1000) return `${Math.round(n)} B`;
  if (n < 1e6) return `${(n / 1e3).toFixed(1)} kB`;
  if (n < 1e9) return `${(n / 1e6).toFixed(1)} MB`;
  return `${(n / 1e9).toFixed(2)} GB`;
}

/** `HH:MM` of now in UTC with the date, as the sections of RESULTS.md are stamped. */
export function stamp(): string {
  return new Date().toISOString().slice(0, 16).replace('T', ' ');
}

export function loadAverage(): string {
  return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
}

export function machine(): string {
  return `${availableParallelism()} cores (${cpus()[0]?.model ?? 'unknown CPU'}), ${Math.round(totalmem() / 2 ** 30)} GiB RAM`;
}

/**
 * Replaces the text between `begin` and `end` in `file` (or appends the block) and keeps
 * everything else in the file: every benchmark owns only its own section.
 */
export function writeSection(file: string, begin: string, end: string, section: string): void {
  const old = existsSync(file) ? readFileSync(file, 'utf8') : '';
  const block = `${begin}\n${section}${end}\n`;
  const a = old.indexOf(begin);
  const b = old.indexOf(end);
  const next = a >= 0 && b > a ? old.slice(0, a) + block + old.slice(b + end.length).replace(/^\n/, '') : `${old}${old && !old.endsWith('\n\n') ? (old.endsWith('\n') ? '\n' : '\n\n') : ''}${block}`;
  writeFileSync(file, next);
}
