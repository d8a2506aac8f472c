import type { HistoryEntry } from '@tsbuild/oci';
import { ellipsis, humanDuration, humanSize, table } from './units.ts';

/** One row of `tsbuild history`: a history entry joined with its layer size. */
export interface HistoryRow {
  /** Short image id for the newest entry, else undefined (shown as `<missing>`). */
  id: string | undefined;
  entry: HistoryEntry;
  /** Layer size in bytes; 0 for empty layers. */
  size: number;
}

export interface HistoryFormatOptions {
  now: number;
  trunc: boolean;
  human: boolean;
  quiet: boolean;
  format: 'table' | 'json';
}

/** Renders rows (already newest first) the way `docker history` does. */
export function formatHistory(rows: HistoryRow[], o: HistoryFormatOptions): string {
  if (o.quiet) return rows.map((r) => `${r.id ?? '<missing>'}\n`).join('');
  const cells = rows.map((r) => {
    const createdBy = (r.entry.created_by ?? '').replaceAll('\t', ' ');
    const createdMs = r.entry.created ? Date.parse(r.entry.created) : NaN;
    const since = Number.isNaN(createdMs) ? 'N/A' : `${humanDuration(Math.max(0, o.now - createdMs))} ago`;
    return {
      ID: r.id ?? '<missing>',
      CreatedSince: since,
      CreatedAt: r.entry.created ?? '',
      CreatedBy: o.trunc ? ellipsis(createdBy, 45) : createdBy,
      Size: o.human ? humanSize(r.size) : String(r.size),
      Comment: r.entry.comment ?? '',
    };
  });
  if (o.format === 'json') return cells.map((c) => JSON.stringify(c) + '\n').join('');
  return table(
    ['IMAGE', 'CREATED', 'CREATED BY', 'SIZE', 'COMMENT'],
    cells.map((c) => [c.ID, o.human ? c.CreatedSince : c.CreatedAt, c.CreatedBy, c.Size, c.Comment]),
  );
}
