import type { ImageLayerAnalysis, LayerReport, PathChange } from '@tsbuild/builder';
import { ellipsis, humanSize, table } from './units.ts';

/**
 * `tsbuild history --files`: per layer, what it added (A), changed (M) and removed (D), then what
 * the image wastes. Layers are listed bottom first and numbered from 0 at the base, as dive lists
 * and numbers them: reading down the page is reading the Dockerfile, and a file's story (added,
 * changed, removed) reads in the order it happened.
 *
 * `--format json` prints the ImageLayerAnalysis of @tsbuild/builder as one JSON document:
 *
 *   {
 *     "id": "sha256:…",                     image id (config digest)
 *     "layers": [{
 *       "index": 0,                          from the bottom, as --layer counts
 *       "digest": "sha256:…", "diffId": "sha256:…", "blobSize": 2138624,
 *       "createdBy": "…", "created": "2024-…Z",
 *       "size": 2131013,                     sum of the layer's file sizes
 *       "added":   [{ "path": "/bin/busybox", "size": 1234 }],   biggest first
 *       "changed": [{ "path": "/etc", "size": 0 }],
 *       "removed": [{ "path": "/big", "size": 1048576 }]        size = bytes removed
 *     }],
 *     "totalSize": 3179589,                  sum of the layers' sizes
 *     "wastedBytes": 1048576,                copies replaced or removed by a later layer
 *     "wasted": [{ "path": "/big", "bytes": 1048576, "copies": 1 }],
 *     "efficiency": 0.6702                   dive's score, 0 to 1
 *   }
 *
 * With --layer N it prints that layer's object alone.
 */
export interface LayerFormatOptions {
  /** Cut created_by and the lists (`--no-trunc` turns this off). */
  trunc: boolean;
  human: boolean;
  format: 'table' | 'json';
  /** Only this layer (by index), without the image summary. */
  layer?: number | undefined;
}

/** Paths listed per layer, and wasted paths listed, unless --no-trunc. */
const SHOWN_PER_LAYER = 20;
const SHOWN_WASTED = 10;
const CREATED_BY_WIDTH = 60;

export function formatLayerAnalysis(a: ImageLayerAnalysis, o: LayerFormatOptions): string {
  const only = o.layer === undefined ? undefined : a.layers[o.layer];
  if (o.format === 'json') return `${JSON.stringify(only ?? a, null, 2)}\n`;
  const size = (n: number): string => (o.human ? humanSize(n) : String(n));
  const exact = (n: number): string => (o.human ? `${humanSize(n)} (${n} bytes)` : `${n} bytes`);
  if (only) return formatLayer(only, o, size);
  const out = a.layers.map((l) => formatLayer(l, o, size));
  const summary = [
    `Total size:     ${exact(a.totalSize)}`,
    `Wasted space:   ${exact(a.wastedBytes)}`,
    `Efficiency:     ${percent(a.efficiency)}`,
  ];
  out.push(`${summary.join('\n')}\n`);
  if (a.wasted.length > 0) {
    const shown = o.trunc ? a.wasted.slice(0, SHOWN_WASTED) : a.wasted;
    let t = table(['WASTED', 'COPIES', 'PATH'], shown.map((w) => [size(w.bytes), String(w.copies), printable(w.path)]));
    if (shown.length < a.wasted.length) {
      const rest = a.wasted.slice(shown.length);
      t += `… and ${rest.length} more (${size(rest.reduce((s, w) => s + w.bytes, 0))})\n`;
    }
    out.push(t);
  }
  return out.join('\n');
}

function formatLayer(l: LayerReport, o: LayerFormatOptions, size: (n: number) => string): string {
  const createdBy = printable((l.createdBy || '<missing>').replace(/[\t\r\n]+/g, ' '));
  const head = `Layer ${l.index}   ${size(l.size)}   ${o.trunc ? ellipsis(createdBy, CREATED_BY_WIDTH) : createdBy}\n`;
  const all: { kind: string; c: PathChange }[] = [
    ...l.added.map((c) => ({ kind: 'A', c })),
    ...l.changed.map((c) => ({ kind: 'M', c })),
    ...l.removed.map((c) => ({ kind: 'D', c })),
  ].sort((x, y) => y.c.size - x.c.size || (x.c.path < y.c.path ? -1 : x.c.path > y.c.path ? 1 : 0));
  const shown = o.trunc ? all.slice(0, SHOWN_PER_LAYER) : all;
  const sizes = shown.map((s) => size(s.c.size));
  const width = Math.max(0, ...sizes.map((s) => s.length));
  let body = shown.map((s, i) => `  ${s.kind}  ${sizes[i]!.padEnd(width)}  ${printable(s.c.path)}\n`).join('');
  if (shown.length < all.length) {
    const rest = all.slice(shown.length);
    body += `  … and ${rest.length} more (${size(rest.reduce((s, x) => s + x.c.size, 0))})\n`;
  }
  return head + body;
}

/** Floored, so an image that wastes anything never reads 100%. */
function percent(f: number): string {
  return `${(Math.floor(f * 10_000) / 100).toFixed(2)}%`;
}

/** Paths come from the image's tars: control characters would reach the terminal, so they are escaped. */
function printable(s: string): string {
  return s.replace(/[\u0000-\u001f\u007f-\u009f]/g, (ch) => `\\x${ch.charCodeAt(0).toString(16).padStart(2, '0')}`);
}
