/** `s.trim().toLowerCase()`: JavaScript's Unicode-aware, locale-independent trim and case. */
export function trimLower(s: string): string {
  return s.trim().toLowerCase();
}

/** `s.trim().toUpperCase()`. */
export function trimUpper(s: string): string {
  return s.trim().toUpperCase();
}

export interface MaskOptions {
  /** Characters kept in clear at the start (default 0). */
  keepStart?: number;
  /** Characters kept in clear at the end (default 4). */
  keepEnd?: number;
  /** Mask character (default `*`). */
  char?: string;
}

/**
 * Masks the middle of a value, keeping `keepStart` and `keepEnd` characters in clear. A value too
 * short to keep anything hidden is masked entirely.
 *
 * @example
 * mask('4111111111111111', { keepStart: 6, keepEnd: 4 }) // '411111******1111'
 */
export function mask(value: string, options: MaskOptions = {}): string {
  const keepStart = options.keepStart ?? 0;
  const keepEnd = options.keepEnd ?? 4;
  const char = options.char ?? '*';
  if (value.length <= keepStart + keepEnd) return char.repeat(value.length);
  return (
    value.slice(0, keepStart) +
    char.repeat(value.length - keepStart - keepEnd) +
    value.slice(value.length - keepEnd)
  );
}
