/** Edit distance (insertions, deletions, substitutions each cost 1), over UTF-16 code units. */
export function levenshtein(a: string, b: string): number {
  if (a === b) return 0;
  if (a.length === 0) return b.length;
  if (b.length === 0) return a.length;
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      cur[j] = Math.min((prev[j] ?? 0) + 1, (cur[j - 1] ?? 0) + 1, (prev[j - 1] ?? 0) + cost);
    }
    prev = cur;
  }
  return prev[b.length] ?? 0;
}

const MAX_NAME = 256;

/**
 * The closest option within an edit distance of 2, as BuildKit suggests names ("did you mean …?");
 * '' when nothing is close, or when the value itself is one of the options.
 */
export function suggest(value: string, options: Iterable<string>, budget?: SuggestBudget): string {
  let best = '';
  let min = 3;
  // Names come from untrusted text: keep the quadratic distance to short ones.
  if (value.length > MAX_NAME) return '';
  for (const option of options) {
    if (option === value) return '';
    if (option.length > MAX_NAME || Math.abs(option.length - value.length) >= min) continue;
    if (budget && !budget.spend(value.length * option.length)) return '';
    const d = levenshtein(value, option);
    if (d < min) {
      best = option;
      min = d;
    }
  }
  return best;
}

/**
 * Caps the work all suggestions of one check may do: a hostile Dockerfile with thousands of
 * variables would otherwise compare every name with every other. Once spent, no suggestions.
 */
export class SuggestBudget {
  constructor(private left = 50_000_000) {}
  spend(cost: number): boolean {
    if (cost > this.left) {
      this.left = 0;
      return false;
    }
    this.left -= cost;
    return true;
  }
}
