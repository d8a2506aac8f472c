import { usageText } from '@tsbuild/builder';
import type { BuildEvent } from '@tsbuild/builder';

export type ProgressMode = 'auto' | 'tty' | 'plain' | 'rawjson' | 'quiet';

export interface ProgressRenderer {
  event(e: BuildEvent): void;
  /** Flushes the last frame; returns the last log lines of a failed step for the error report. */
  close(): void;
}

const LOG_TAIL = 10;

/** Picks and creates a renderer: `auto` means tty when stderr is a terminal, else plain. */
export function createRenderer(mode: ProgressMode, out: NodeJS.WriteStream = process.stderr): ProgressRenderer {
  if (mode === 'quiet') return { event() {}, close() {} };
  if (mode === 'rawjson') return { event: (e) => out.write(JSON.stringify(e) + '\n'), close() {} };
  if (mode === 'tty' || (mode === 'auto' && out.isTTY)) return new TtyRenderer(out);
  return new PlainRenderer(out);
}

interface StepState {
  name: string;
  start: number;
  done: boolean;
  cached: boolean;
  error: boolean;
  duration: number;
  /** What a finished RUN cost (cpu and peak memory), or ''. */
  usage?: string;
  tail: string[];
  partial: string;
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)}s`;
}

/** One line per event, for CI logs: `#3 [stage 2/5] RUN make`, output prefixed `#3 `. */
class PlainRenderer implements ProgressRenderer {
  private ids = new Map<string, number>();
  private partial = new Map<string, string>();
  constructor(private out: NodeJS.WritableStream) {}
  private n(id: string): number {
    let n = this.ids.get(id);
    if (n === undefined) this.ids.set(id, (n = this.ids.size + 1));
    return n;
  }
  event(e: BuildEvent): void {
    switch (e.type) {
      case 'step-start':
        this.out.write(`#${this.n(e.id)} ${e.name}\n`);
        break;
      case 'step-log': {
        const text = (this.partial.get(e.id) ?? '') + e.data;
        const lines = text.split('\n');
        this.partial.set(e.id, lines.pop() ?? '');
        for (const l of lines) this.out.write(`#${this.n(e.id)} ${l}\n`);
        break;
      }
      case 'step-done': {
        const rest = this.partial.get(e.id);
        if (rest) this.out.write(`#${this.n(e.id)} ${rest}\n`);
        this.partial.delete(e.id);
        this.out.write(`#${this.n(e.id)} ${e.cached ? 'CACHED' : `DONE ${seconds(e.durationMs)}${e.usage ? `  ${usageText(e.usage)}` : ''}${e.miss ? `  (cache miss: ${e.miss.reason})` : ''}`}\n`);
        break;
      }
      case 'step-error':
        this.out.write(`#${this.n(e.id)} ERROR: ${e.message}\n`);
        break;
      case 'build-done': {
        // As docker build says it: the image (its id, the config digest) is written; the manifest
        // that names it is exported, and its digest is what registries and `name@digest` use.
        const n = this.ids.size + 1;
        this.out.write(`#${n} exporting manifest ${e.imageDigest}\n`);
        this.out.write(`#${n} DONE ${seconds(e.durationMs)} writing image ${e.configDigest}\n`);
        break;
      }
      default:
        break;
    }
  }
  close(): void {}
}

/** Redraws a block of step lines; finished steps collapse to one line, running ones show output. */
class TtyRenderer implements ProgressRenderer {
  private steps = new Map<string, StepState>();
  private drawn = 0;
  private timer: NodeJS.Timeout | undefined;
  private started = Date.now();
  private written: string[] = [];
  constructor(private out: NodeJS.WriteStream) {}
  event(e: BuildEvent): void {
    if (e.type === 'step-start') {
      this.steps.set(e.id, { name: e.name, start: e.time, done: false, cached: false, error: false, duration: 0, tail: [], partial: '' });
      this.timer ??= setInterval(() => this.draw(), 100).unref();
    } else if (e.type === 'step-log') {
      const s = this.steps.get(e.id);
      if (!s) return;
      const lines = (s.partial + e.data).split('\n');
      s.partial = lines.pop() ?? '';
      s.tail.push(...lines);
      if (s.tail.length > LOG_TAIL) s.tail.splice(0, s.tail.length - LOG_TAIL);
    } else if (e.type === 'step-done') {
      const s = this.steps.get(e.id);
      if (s) Object.assign(s, { done: true, cached: e.cached, duration: e.durationMs, usage: [usageText(e.usage), e.miss ? `(cache miss: ${e.miss.reason})` : ''].filter(Boolean).join('  ') });
    } else if (e.type === 'step-error') {
      const s = this.steps.get(e.id);
      if (s) Object.assign(s, { done: true, error: true, duration: e.time - s.start });
    } else if (e.type === 'build-done') {
      this.written = [` => exporting manifest ${e.imageDigest}`, ` => writing image ${e.configDigest}`];
    }
    if (e.type !== 'step-log') this.draw();
  }
  private draw(): void {
    const width = this.out.columns || 100;
    const cut = (l: string) => (l.length > width - 1 ? l.slice(0, width - 1) : l);
    const lines = [`[+] Building ${seconds(Date.now() - this.started)}`];
    for (const s of this.steps.values()) {
      const status = s.error ? 'ERROR' : s.cached ? 'CACHED' : s.done ? `${seconds(s.duration)}${s.usage ? `  ${s.usage}` : ''}` : seconds(Date.now() - s.start);
      lines.push(cut(` => ${s.name}  ${status}`));
      if (!s.done || s.error) for (const l of [...s.tail, s.partial].filter(Boolean).slice(-6)) lines.push(cut(` => > ${l}`));
    }
    for (const l of this.written) lines.push(cut(l));
    let buf = this.drawn > 0 ? `\x1b[${this.drawn}F` : '';
    buf += lines.map((l) => `${l}\x1b[K`).join('\n') + '\n\x1b[J';
    this.out.write(buf);
    this.drawn = lines.length;
  }
  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.draw();
  }
}
