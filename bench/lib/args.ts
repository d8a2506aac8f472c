/** The few command-line options the benchmarks share: `--flag` and `--name VALUE`. */
export interface Args {
  flag(name: string): boolean;
  option(name: string): string | undefined;
  /** `--runs N`, at least 1, or undefined when not given. */
  runs(): number | undefined;
  /** A comma-separated list option (`--cases c1,c2`), or undefined when not given. */
  list(name: string): string[] | undefined;
}

export function parseArgs(argv: readonly string[]): Args {
  const option = (name: string): string | undefined => {
    const i = argv.indexOf(name);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  return {
    flag: (name) => argv.includes(name),
    option,
    runs() {
      const v = option('--runs');
      return v === undefined ? undefined : Math.max(1, Number.parseInt(v, 10) || 1);
    },
    list(name) {
      return option(name)?.split(',');
    },
  };
}
