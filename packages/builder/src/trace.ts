/**
 * Where a build's time goes, for bench/profile.ts: named spans with start and end in milliseconds
 * since the process started (`performance.now()`). Off unless TSBUILD_TRACE names a file; then
 * the CLI writes the spans there as JSON lines when it exits. Costs one boolean test when off.
 */
import { writeFileSync } from 'node:fs';

export interface Span {
  name: string;
  start: number;
  end: number;
}

const target = process.env.TSBUILD_TRACE;
const spans: Span[] = [];

/** Whether spans are being recorded. */
export const tracing = target !== undefined && target !== '';

/** Times `fn` under `name` when tracing. */
export async function span<T>(name: string, fn: () => Promise<T>): Promise<T> {
  if (!tracing) return fn();
  const start = performance.now();
  try {
    return await fn();
  } finally {
    spans.push({ name, start, end: performance.now() });
  }
}

/** Records a span that is already over (for work timed by its own code). */
export function recordSpan(name: string, start: number, end: number = performance.now()): void {
  if (tracing) spans.push({ name, start, end });
}

/** Writes the spans recorded so far to $TSBUILD_TRACE (one JSON object a line). */
export function writeTrace(): void {
  if (!tracing) return;
  writeFileSync(target as string, spans.map((s) => JSON.stringify(s)).join('\n') + '\n');
}
