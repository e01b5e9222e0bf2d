/** One rule of a classification table: the label applies when every pattern matches. */
export interface ClassRule<L extends string = string> {
  match: RegExp | string | readonly (RegExp | string)[];
  label: L;
}

export interface ClassifierOptions<L extends string> {
  /** Label when no rule matches. */
  otherwise: L;
  /**
   * Distinct inputs remembered (default 10,000). Classified fields such as user agents repeat
   * heavily, and a hit costs one Map lookup instead of several regex scans.
   */
  cacheSize?: number;
}

/**
 * Compiles an ordered classification table into a plain function: the first rule whose patterns
 * all match (JavaScript `RegExp#test`, so a pattern may match anywhere unless anchored) gives the
 * label. Strings are compiled as `new RegExp(text)`.
 *
 * @example
 * const browser = classifier([
 *   { match: /Edg\//, label: 'edge' },
 *   { match: [/Safari\/\d/, /Version\/\d/], label: 'safari' },
 * ], { otherwise: 'other' });
 * browser('Mozilla/5.0 … Edg/131.0') // 'edge'
 */
export function classifier<L extends string>(
  rules: readonly ClassRule<L>[],
  options: ClassifierOptions<L>,
): (input: string) => L {
  const compiled = rules.map((r) => ({
    patterns: (Array.isArray(r.match) ? r.match : [r.match]).map((p: RegExp | string) =>
      typeof p === 'string' ? new RegExp(p) : p,
    ),
    label: r.label,
  }));
  const cacheSize = options.cacheSize ?? 10_000;
  const cache = new Map<string, L>();
  const classify = (input: string): L => {
    for (const rule of compiled) {
      let all = true;
      for (const p of rule.patterns) {
        p.lastIndex = 0;
        if (!p.test(input)) {
          all = false;
          break;
        }
      }
      if (all) return rule.label;
    }
    return options.otherwise;
  };
  return (input: string): L => {
    let label = cache.get(input);
    if (label === undefined) {
      label = classify(input);
      if (cache.size < cacheSize) cache.set(input, label);
    }
    return label;
  };
}
