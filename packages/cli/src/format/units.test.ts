import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ellipsis, humanDuration, humanSize } from './units.ts';
import { formatHistory } from './history.ts';

test('humanSize matches docker units', () => {
  const cases: [number, string][] = [
    [0, '0B'], [512, '512B'], [999, '999B'], [1000, '1kB'], [1234, '1.23kB'], [4096, '4.1kB'],
    [12345, '12.3kB'], [1_234_567, '1.23MB'], [5_000_000_000, '5GB'],
  ];
  for (const [n, s] of cases) assert.equal(humanSize(n), s, String(n));
});

test('humanDuration matches docker wording', () => {
  const s = 1000, m = 60 * s, h = 60 * m, d = 24 * h;
  const cases: [number, string][] = [
    [500, 'Less than a second'], [1 * s, '1 second'], [59 * s, '59 seconds'], [90 * s, 'About a minute'],
    [3 * m, '3 minutes'], [h, 'About an hour'], [5 * h, '5 hours'], [3 * d, '3 days'], [20 * d, '2 weeks'],
    [90 * d, '3 months'], [800 * d, '2 years'],
  ];
  for (const [ms, str] of cases) assert.equal(humanDuration(ms), str, String(ms));
});

test('ellipsis cuts to the width with a final …', () => {
  assert.equal(ellipsis('abc', 45), 'abc');
  const long = 'RUN /bin/sh -c apt-get update && apt-get install -y curl # tsbuild';
  const cut = ellipsis(long, 45);
  assert.equal(Array.from(cut).length, 45);
  assert.ok(cut.endsWith('…'));
});

test('formatHistory: table, json, quiet', () => {
  const now = Date.parse('2026-01-01T00:10:00Z');
  const rows = [
    { id: 'abcdef012345', entry: { created: '2026-01-01T00:07:00Z', created_by: 'CMD ["sh"]', empty_layer: true }, size: 0 },
    { id: undefined, entry: { created: '2026-01-01T00:07:00Z', created_by: 'RUN /bin/sh -c echo hi > /x # tsbuild' }, size: 2048 },
  ];
  const t = formatHistory(rows, { now, trunc: true, human: true, quiet: false, format: 'table' });
  const lines = t.trimEnd().split('\n');
  assert.match(lines[0]!, /^IMAGE\s+CREATED\s+CREATED BY\s+SIZE\s+COMMENT$/);
  assert.match(lines[1]!, /^abcdef012345\s+3 minutes ago\s+CMD \["sh"\]\s+0B$/);
  assert.match(lines[2]!, /^<missing>\s+3 minutes ago\s+RUN .* # tsbuild\s+2\.05kB$/);
  const j = formatHistory(rows, { now, trunc: false, human: false, quiet: false, format: 'json' }).trim().split('\n');
  const first = JSON.parse(j[0]!);
  assert.deepEqual(Object.keys(first).sort(), ['Comment', 'CreatedAt', 'CreatedBy', 'CreatedSince', 'ID', 'Size']);
  assert.equal(JSON.parse(j[1]!).Size, '2048');
  assert.equal(formatHistory(rows, { now, trunc: true, human: true, quiet: true, format: 'table' }), 'abcdef012345\n<missing>\n');
});
