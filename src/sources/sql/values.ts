/** Value conversions both database sources share. */
import { BadValue } from './driver.js';

const TIMESTAMP =
  /^(\d{4,})-(\d\d)-(\d\d)[ T](\d\d):(\d\d):(\d\d)(\.\d+)?(?:([+-])(\d\d)(?::?(\d\d))?(?::?(\d\d))?)?( BC)?$/;
const DATE = /^(\d{4,})-(\d\d)-(\d\d)( BC)?$/;

function isoYear(digits: string, bc: boolean): string {
  let year = Number(digits);
  if (bc) year = 1 - year; // 1 BC is year 0 in ISO 8601
  if (year >= 0 && year <= 9999) return String(year).padStart(4, '0');
  return `${year < 0 ? '-' : '+'}${String(Math.abs(year)).padStart(6, '0')}`;
}

function checkDay(month: string, day: string, text: string): void {
  const mo = Number(month);
  const d = Number(day);
  if (mo < 1 || mo > 12 || d < 1 || d > 31) throw new BadValue(`not a calendar date: ${text.slice(0, 60)}`);
}

/**
 * A server timestamp (`2024-01-02 03:04:05.123456+00`, `… BC`, `infinity`) as ISO 8601 in
 * UTC, keeping its microseconds. A value with no zone is taken as UTC (the servers' text of
 * `timestamptz` / MySQL `TIMESTAMP` is in UTC: the connectors set the session zone).
 */
export function isoTimestamp(text: string): string {
  // The common case, checked by position: `YYYY-MM-DD HH:MM:SS[.f…][+00]`.
  const n = text.length;
  if (n >= 19 && text.charCodeAt(4) === 45 && text.charCodeAt(10) === 32 && text.charCodeAt(13) === 58) {
    const month = (text.charCodeAt(5) - 48) * 10 + text.charCodeAt(6) - 48;
    const day = (text.charCodeAt(8) - 48) * 10 + text.charCodeAt(9) - 48;
    const utc =
      n > 19 &&
      text.charCodeAt(n - 3) === 43 &&
      text.charCodeAt(n - 2) === 48 &&
      text.charCodeAt(n - 1) === 48;
    const body = utc ? n - 3 : n;
    if (
      month >= 1 &&
      month <= 12 &&
      day >= 1 &&
      day <= 31 &&
      (body === 19 || text.charCodeAt(19) === 46) &&
      (utc || /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?$/.test(text))
    )
      return `${text.slice(0, 10)}T${text.slice(11, body)}Z`;
  }
  if (text === 'infinity' || text === '-infinity') return text;
  const m = TIMESTAMP.exec(text);
  if (!m) throw new BadValue(`not a timestamp: ${text.slice(0, 60)}`);
  const [, y, mo, d, hh, mi, ss, frac, sign, oh, om] = m;
  checkDay(mo!, d!, text);
  if (sign !== undefined && (oh !== '00' || (om !== undefined && om !== '00'))) {
    // Not produced with the session zone UTC, but handled: shift through Date (milliseconds).
    const ms = Date.parse(
      `${isoYear(y!, m[12] !== undefined)}-${mo}-${d}T${hh}:${mi}:${ss}${frac ?? ''}${sign}${oh}:${om ?? '00'}`,
    );
    if (Number.isNaN(ms)) throw new BadValue(`not a timestamp: ${text.slice(0, 60)}`);
    return new Date(ms).toISOString();
  }
  return `${isoYear(y!, m[12] !== undefined)}-${mo}-${d}T${hh}:${mi}:${ss}${frac ?? ''}Z`;
}

/** A server date (`2024-01-02`, `0044-03-15 BC`, `infinity`) as ISO 8601. */
export function isoDate(text: string): string {
  if (text === 'infinity' || text === '-infinity') return text;
  const m = DATE.exec(text);
  if (!m) throw new BadValue(`not a date: ${text.slice(0, 60)}`);
  checkDay(m[2]!, m[3]!, text);
  return `${isoYear(m[1]!, m[4] !== undefined)}-${m[2]}-${m[3]}`;
}

/** An integer as a number when it is exact in a double, otherwise as its decimal text. */
export function integer(text: string): number | string {
  const n = Number(text);
  // The server's integer text: exact as a double up to 2^53.
  if (Number.isSafeInteger(n) && text.length > 0 && text.charCodeAt(text.length - 1) !== 32) return n;
  if (!Number.isFinite(n) || !/^-?\d+$/.test(text))
    throw new BadValue(`not an integer: ${text.slice(0, 60)}`);
  return Number.isSafeInteger(n) ? n : text;
}

/** A float as a number; NaN and the infinities (no JSON number) as their text. */
export function float(text: string): number | string {
  const n = Number(text);
  if (Number.isNaN(n) && text !== 'NaN') throw new BadValue(`not a number: ${text.slice(0, 60)}`);
  return Number.isFinite(n) ? n : text;
}

export function json(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new BadValue(`not JSON: ${(err as Error).message}`);
  }
}
