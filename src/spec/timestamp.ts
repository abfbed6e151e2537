/** Earliest instant collection accepts: 0001-01-01T00:00:00.000Z. */
export const MIN_TIME_MS = -62_135_596_800_000;
/** Latest instant collection accepts: 9999-12-31T23:59:59.999Z. */
export const MAX_TIME_MS = 253_402_300_799_999;

/**
 * ISO-8601 / RFC 3339 as clients send it: a date, optionally a time (seconds and fraction
 * optional) and an offset (`Z`, `+02:00`, `+0200`, `+02`). No offset means UTC.
 */
const ISO =
  /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|[+-]\d{2}(?::?\d{2})?)?)?$/i;

/** The form `Date.prototype.toISOString` gives, which SDKs send: checked without a match array. */
const CANONICAL = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

/** The two-digit number at `i`. */
function two(text: string, i: number): number {
  return (text.charCodeAt(i) - 48) * 10 + text.charCodeAt(i + 1) - 48;
}

function canonical(text: string): number | undefined {
  const year = two(text, 0) * 100 + two(text, 2);
  const month = two(text, 5);
  const day = two(text, 8);
  if (year < 1 || month < 1 || month > 12 || day < 1 || day > daysIn(year, month)) return undefined;
  if (two(text, 11) > 23 || two(text, 14) > 59 || two(text, 17) > 59) return undefined;
  return Date.parse(text);
}

function daysIn(year: number, month: number): number {
  if (month === 2) return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0 ? 29 : 28;
  return month === 4 || month === 6 || month === 9 || month === 11 ? 30 : 31;
}

/**
 * The instant an ISO-8601 date-time names, in epoch milliseconds, or undefined when the text
 * is not one, names a day or time that does not exist (`2020-02-30`, `24:00`, `23:59:60`), or
 * lies outside years 0001 to 9999 once its offset is applied. Stricter than `Date.parse`,
 * which rolls `2020-02-30` over to March 1 and reads years DuckDB and PostgreSQL refuse: an
 * instant that passes is one every engine stores. Digits past milliseconds are truncated.
 *
 * @example parseTimestamp('2026-11-21T13:00:00.000Z') // 1795266000000
 */
export function parseTimestamp(text: string): number | undefined {
  if (text.length === 24 && CANONICAL.test(text)) return canonical(text);
  if (text.length > 40) return undefined;
  const m = ISO.exec(text);
  if (m === null) return undefined;
  const year = Number(m[1]);
  const month = Number(m[2]);
  const day = Number(m[3]);
  if (year < 1 || month < 1 || month > 12 || day < 1 || day > daysIn(year, month)) return undefined;
  const hour = m[4] === undefined ? 0 : Number(m[4]);
  const minute = m[5] === undefined ? 0 : Number(m[5]);
  const second = m[6] === undefined ? 0 : Number(m[6]);
  if (hour > 23 || minute > 59 || second > 59) return undefined;
  const millis = m[7] === undefined ? 0 : Number(m[7].slice(0, 3).padEnd(3, '0'));
  let offsetMinutes = 0;
  const zone = m[8];
  if (zone !== undefined && zone !== 'Z' && zone !== 'z') {
    const oh = Number(zone.slice(1, 3));
    const om = zone.length > 3 ? Number(zone.slice(-2)) : 0;
    if (oh > 23 || om > 59) return undefined;
    offsetMinutes = (zone[0] === '-' ? -1 : 1) * (oh * 60 + om);
  }
  const d = new Date(0);
  // setUTCFullYear, not Date.UTC: Date.UTC reads years 0-99 as 1900-1999.
  d.setUTCFullYear(year, month - 1, day);
  d.setUTCHours(hour, minute - offsetMinutes, second, millis);
  const ms = d.getTime();
  return ms >= MIN_TIME_MS && ms <= MAX_TIME_MS ? ms : undefined;
}

/** Whether an epoch-milliseconds instant is within the years collection accepts. */
export function inTimeRange(ms: number): boolean {
  return ms >= MIN_TIME_MS && ms <= MAX_TIME_MS;
}
