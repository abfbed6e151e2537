import { z } from 'zod';

/** Durations as `500ms`, `30s`, `15m`, `12h`, `7d`, or a number of milliseconds. */
export const Duration = z
  .union([
    z.number().int().nonnegative(),
    z
      .string()
      .regex(
        /^\d+(\.\d+)?\s*(ms|s|m|h|d)$/,
        'expected a duration such as "500ms", "30s", "15m", "12h" or "7d"',
      ),
  ])
  .transform((v) => (typeof v === 'number' ? v : parseDuration(v)));

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

export function parseDuration(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)$/.exec(text.trim());
  if (!m) throw new Error(`not a duration: ${text}`);
  return Math.round(Number(m[1]) * UNIT_MS[m[2]!]!);
}
