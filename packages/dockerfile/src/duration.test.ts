import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DockerfileError } from '@tsbuild/errors';
import { formatDuration, parseDuration } from './duration.ts';

test('Go durations convert to exact nanoseconds', () => {
  const cases: Array<[string, number]> = [
    ['0', 0],
    ['-0', 0],
    ['0s', 0],
    ['30s', 30e9],
    ['1m30s', 90e9],
    ['1.5h', 5400e9],
    ['1h1m1s', 3661e9],
    ['250ms', 250e6],
    ['1.1s', 1_100_000_000],
    ['.5s', 5e8],
    ['5.s', 5e9],
    ['10us', 10_000],
    ['10µs', 10_000],
    ['10μs', 10_000],
    ['7ns', 7],
    ['+2s', 2e9],
    ['-2s', -2e9],
    ['1.0000000001s', 1e9],
    ['2h45m', 9900e9],
  ];
  for (const [text, ns] of cases) assert.equal(parseDuration(text), ns, text);
});

test('malformed durations are refused with the text in the message', () => {
  for (const text of ['', '5', '1.5', 's', '.s', '1x', '1 s', '1s2', '1..2s', '-', '1hh', 'ten s', '999999999h']) {
    assert.throws(
      () => parseDuration(text),
      (e: unknown) => e instanceof DockerfileError && e.detail.includes(JSON.stringify(text)),
      text,
    );
  }
});

test('durations format like Go', () => {
  const cases: Array<[number, string]> = [
    [0, '0s'],
    [90e9, '1m30s'],
    [5400e9, '1h30m0s'],
    [1_500_000_000, '1.5s'],
    [250e6, '250ms'],
    [1500, '1.5µs'],
    [7, '7ns'],
    [-2e9, '-2s'],
  ];
  for (const [ns, text] of cases) {
    assert.equal(formatDuration(ns), text);
    assert.equal(parseDuration(text), ns);
  }
});
