/**
 * Runs `body(i)` for every i in [0, n). When it throws for one i, `onError(i, err)` is called and
 * the loop resumes at i + 1: one record's failure never unwinds the batch, and there is no
 * try/catch around each record.
 */
export function eachResuming(
  n: number,
  body: (i: number) => void,
  onError: (i: number, err: unknown) => void,
): void {
  let from = 0;
  while (from < n) {
    let i = from;
    try {
      for (; i < n; i++) body(i);
      return;
    } catch (err) {
      onError(i, err);
      from = i + 1;
    }
  }
}

/** `Name: message` of something thrown, for dead-letter details. */
export function describeThrown(err: unknown): string {
  const e = err as Error | undefined;
  return e instanceof Error ? `${e.name}: ${e.message}` : `thrown: ${String(err)}`;
}
