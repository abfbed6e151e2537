import { type ErrorCode, TributaryError } from '../../errors.js';

/**
 * An error that stops a database source's read or check. `retryable` errors (a connection
 * lost, a server restarting) are worth a new read from the last committed state; the others
 * (a table gone, a wrong cursor) need the user.
 */
export class SourceError extends TributaryError {
  readonly retryable: boolean;

  constructor(
    code: ErrorCode,
    args: readonly (string | number)[],
    options: { retryable?: boolean; cause?: unknown } = {},
  ) {
    super(code, args, { cause: options.cause });
    this.name = 'SourceError';
    this.retryable = options.retryable ?? false;
  }
}

/** The message of any thrown value, trimmed for an error message. */
export function describeError(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  return text.length > 300 ? `${text.slice(0, 300)}…` : text;
}
