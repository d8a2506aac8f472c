/** Build contexts the benchmarks generate: the same names and bytes on every run and for every tool. */
import { mkdirSync, writeFileSync } from 'node:fs';

/** Deterministic text, so every run and every tool reads the same tree. */
export function text(seed: number, len: number): string {
  let s = '';
  let x = seed * 2654435761 + 1;
  while (s.length < len) {
    x = (x * 1103515245 + 12345) >>> 0;
    s += x.toString(36);
  }
  return s.slice(0, len);
}

/** `files` files of 0–4095 bytes, 100 to a directory (`d0000/f0.txt` …): the C2 tree. */
export function makeTree(dir: string, files: number): void {
  const perDir = 100;
  for (let d = 0; d * perDir < files; d++) {
    const sub = `${dir}/d${String(d).padStart(4, '0')}`;
    mkdirSync(sub, { recursive: true });
    for (let i = d * perDir; i < Math.min(files, (d + 1) * perDir); i++) writeFileSync(`${sub}/f${i}.txt`, text(i, (i * 37) % 4096));
  }
}

/** C1's context: `files/f1.txt` … `files/f20.txt`. */
export function writeC1Files(ctx: string): void {
  mkdirSync(`${ctx}/files`, { recursive: true });
  for (let i = 1; i <= 20; i++) writeFileSync(`${ctx}/files/f${i}.txt`, `file ${i}\n${text(i, 200)}\n`);
}
