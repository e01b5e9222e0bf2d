const DIGIT0 = 48;

function digits(s: string, at: number, n: number): number {
  let v = 0;
  for (let i = at; i < at + n; i++) {
    const d = s.charCodeAt(i) - DIGIT0;
    if (d < 0 || d > 9) return -1;
    v = v * 10 + d;
  }
  return v;
}

/** Days since 1970-01-01 of a proleptic Gregorian date (Hinnant's days_from_civil); any year. */
export function daysFromCivil(year: number, month: number, day: number): number {
  const y = month <= 2 ? year - 1 : year;
  const era = Math.floor(y / 400);
  const yoe = y - era * 400;
  const doy = Math.floor((153 * (month + (month > 2 ? -3 : 9)) + 2) / 5) + day - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  return era * 146097 + doe - 719468;
}

export function daysInMonth(year: number, month: number): number {
  if (month === 2) return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0 ? 29 : 28;
  return month === 4 || month === 6 || month === 9 || month === 11 ? 30 : 31;
}

/**
 * Parses an RFC 3339 timestamp `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` to epoch milliseconds
 * (UTC), with real calendar checks: month 1–12, day within the month (leap years included),
 * hour ≤ 23, minute and second ≤ 59 (no leap second), offset hours ≤ 23 and minutes ≤ 59, 1 to 9
 * fraction digits truncated to milliseconds. Years 0000–9999 are taken literally (no 19xx
 * mapping as `Date.UTC` does). Returns `NaN` for anything else.
 *
 * @example
 * rfc3339ToEpochMs('2026-11-21T00:05:00.123456Z') // 1795219500123
 * rfc3339ToEpochMs('2026-02-30T00:00:00Z')        // NaN
 */
export function rfc3339ToEpochMs(s: string): number {
  const len = s.length;
  if (len < 20) return NaN;
  if (s.charCodeAt(4) !== 45 || s.charCodeAt(7) !== 45 || s.charCodeAt(10) !== 84) return NaN; // - - T
  if (s.charCodeAt(13) !== 58 || s.charCodeAt(16) !== 58) return NaN; // : :
  const year = digits(s, 0, 4);
  const month = digits(s, 5, 2);
  const day = digits(s, 8, 2);
  const hour = digits(s, 11, 2);
  const minute = digits(s, 14, 2);
  const second = digits(s, 17, 2);
  if (year < 0 || month < 1 || month > 12 || day < 1 || hour < 0 || hour > 23 || minute < 0 || minute > 59)
    return NaN;
  if (second < 0 || second > 59 || day > daysInMonth(year, month)) return NaN;

  let at = 19;
  let ms = 0;
  if (s.charCodeAt(at) === 46) {
    // '.' then 1–9 digits; only the first three count.
    const start = ++at;
    while (at < len) {
      const d = s.charCodeAt(at) - DIGIT0;
      if (d < 0 || d > 9) break;
      if (at - start < 3) ms = ms * 10 + d;
      at++;
    }
    const n = at - start;
    if (n < 1 || n > 9) return NaN;
    if (n === 1) ms *= 100;
    else if (n === 2) ms *= 10;
  }

  let offsetMinutes = 0;
  const zone = s.charCodeAt(at);
  if (zone === 90) {
    if (at + 1 !== len) return NaN; // Z
  } else if (zone === 43 || zone === 45) {
    if (at + 6 !== len || s.charCodeAt(at + 3) !== 58) return NaN; // ±HH:MM
    const oh = digits(s, at + 1, 2);
    const om = digits(s, at + 4, 2);
    if (oh < 0 || oh > 23 || om < 0 || om > 59) return NaN;
    offsetMinutes = (oh * 60 + om) * (zone === 43 ? 1 : -1);
  } else {
    return NaN;
  }

  const days = daysFromCivil(year, month, day);
  return days * 86_400_000 + ((hour * 60 + minute - offsetMinutes) * 60 + second) * 1000 + ms;
}

/** Epoch milliseconds → `YYYY-MM-DDTHH:MM:SS.mmmZ` (what `Date#toISOString` prints, for years 0–9999). */
export function epochMsToIso(ms: number): string {
  return new Date(ms).toISOString();
}

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * Parses a duration such as `60s`, `5m`, `1h30m` or `250ms` to milliseconds; a bare number is
 * milliseconds. Returns NaN when the text is not a duration.
 */
export function parseDuration(text: string | number): number {
  if (typeof text === 'number') return Number.isFinite(text) && text >= 0 ? text : NaN;
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/y;
  let total = 0;
  let at = 0;
  const s = text.trim();
  if (s === '') return NaN;
  if (/^\d+$/.test(s)) return Number(s);
  while (at < s.length) {
    re.lastIndex = at;
    const m = re.exec(s);
    if (!m) return NaN;
    total += Number(m[1]) * UNITS[m[2]!]!;
    at = re.lastIndex;
  }
  return total;
}
