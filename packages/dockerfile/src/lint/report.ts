import type { SourceRange } from '@tsbuild/errors';
import type { Node } from '../ast.ts';
import type { RuleName } from './rules.ts';
import { RULES } from './rules.ts';
import { ruleEnabled, withComments } from './settings.ts';
import type { CheckSettings } from './settings.ts';
import { SuggestBudget } from './suggest.ts';

/** One finding of `checkDockerfile`: BuildKit's rule name, message, description and page. */
export interface CheckWarning {
  rule: RuleName;
  /** What is wrong here (BuildKit's detail line), e.g. `Stage name 'Build' should be lowercase`. */
  message: string;
  /** What the rule asks for in general. */
  description: string;
  url: string;
  /** The instruction, or the word in it, that the finding is about (1-based lines and columns). */
  range: SourceRange;
}

/**
 * Collects findings, applying the settings in effect: the Dockerfile's (or the build arg's), plus
 * a `# check=` comment directly above the instruction a finding belongs to.
 */
export class Reporter {
  readonly warnings: CheckWarning[] = [];
  /** Shared by every "did you mean" of this check. */
  readonly suggestions = new SuggestBudget();
  private readonly lines: string[];
  /** Characters `word` may still scan; past that a finding keeps the instruction's range. */
  private scanBudget = 20_000_000;
  private readonly perComments = new WeakMap<readonly string[], CheckSettings>();

  constructor(
    readonly settings: CheckSettings,
    text: string,
  ) {
    this.lines = text.split('\n').map((l) => l.replace(/\r$/, ''));
    if (this.lines[0]?.startsWith('\uFEFF')) this.lines[0] = this.lines[0].slice(1);
  }

  /** Settings for an instruction with these comments above it ([] for file-wide rules). */
  settingsFor(comments: readonly string[]): CheckSettings {
    if (comments.length === 0) return this.settings;
    let s = this.perComments.get(comments);
    if (!s) {
      s = withComments(this.settings, comments);
      this.perComments.set(comments, s);
    }
    return s;
  }

  enabled(rule: RuleName, node?: Node): boolean {
    return ruleEnabled(RULES[rule], this.settingsFor(node?.prevComment ?? []));
  }

  /** Records a finding unless its rule is off for `node` (the instruction whose comments apply). */
  report(rule: RuleName, message: string, range: SourceRange, node?: Node): void {
    if (!this.enabled(rule, node)) return;
    const r = RULES[rule];
    this.warnings.push({ rule, message, description: r.description, url: r.url, range });
  }

  /**
   * The first match of `re` inside `range` (the instruction's lines), as a range of its own; the
   * instruction's range when the word is not written literally (it came from a variable).
   */
  word(range: SourceRange, re: RegExp, last = false): SourceRange {
    const g = new RegExp(re.source, re.flags.includes('g') ? re.flags : `${re.flags}g`);
    let found: SourceRange | undefined;
    for (let l = range.start.line; l <= range.end.line; l++) {
      const line = this.lines[l - 1];
      if (line === undefined) break;
      this.scanBudget -= line.length + 1;
      if (this.scanBudget < 0) return found ?? range;
      g.lastIndex = l === range.start.line ? Math.max(0, range.start.column - 1) : 0;
      for (let m = g.exec(line); m; m = g.exec(line)) {
        found = { start: { line: l, column: m.index + 1 }, end: { line: l, column: m.index + 1 + m[0].length } };
        if (!last) return found;
        if (m[0].length === 0) g.lastIndex++;
      }
    }
    return found ?? range;
  }

  /** Sorted by position (stable), exact repeats dropped. */
  result(): CheckWarning[] {
    const seen = new Set<string>();
    const out: CheckWarning[] = [];
    for (const w of this.warnings) {
      const key = `${w.rule}\0${w.message}\0${w.range.start.line}:${w.range.start.column}`;
      if (seen.has(key)) continue;
      seen.add(key);
      out.push(w);
    }
    return out.sort((a, b) => a.range.start.line - b.range.start.line || a.range.start.column - b.range.start.column);
  }
}

export function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}

/** A literal word for a RegExp, bounded so `$FOO` does not match inside `$FOOBAR`. */
export function wordPattern(word: string): RegExp {
  return new RegExp(`(?<![A-Za-z0-9_.-])${escapeRegExp(word)}(?![A-Za-z0-9_])`);
}

/** `$NAME` or `${NAME` as written in the instruction. */
export function variablePattern(name: string): RegExp {
  return new RegExp(`\\$\\{?${escapeRegExp(name)}(?![A-Za-z0-9_])`);
}
