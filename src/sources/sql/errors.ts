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

/**
 * A failure to connect as the stable code a `check` reports. The driver says what its error
 * means (`reason`): a refused login, a database that does not exist, or else an unreachable
 * server (retryable).
 */
export function connectFailure(
  source: string,
  database: string | undefined,
  err: unknown,
  reason: 'auth' | 'database' | undefined,
): SourceError {
  if (reason === 'auth')
    return new SourceError('TRIB_ERR_SOURCE_AUTH', [source, describeError(err)], { cause: err });
  if (reason === 'database')
    return new SourceError(
      'TRIB_ERR_SOURCE_DATABASE_NOT_FOUND',
      [source, database ?? '(from the connection string)'],
      {
        cause: err,
      },
    );
  return new SourceError('TRIB_ERR_SOURCE_UNREACHABLE', [source, describeError(err)], {
    cause: err,
    retryable: true,
  });
}

/**
 * Rethrows an error of a query: as a retryable `TRIB_ERR_SOURCE_CONNECTION_LOST` when the
 * connection is gone (`lost`, an error the connection emitted earlier, or `err` itself as the
 * driver's `isConnectionLost` reads it), otherwise unchanged.
 */
export function rethrowQueryError(
  source: string,
  err: unknown,
  lost: unknown,
  isConnectionLost: (err: unknown) => boolean,
): never {
  if (err instanceof SourceError) throw err;
  if (lost !== undefined || isConnectionLost(err))
    throw new SourceError('TRIB_ERR_SOURCE_CONNECTION_LOST', [source, describeError(lost ?? err)], {
      cause: err,
      retryable: true,
    });
  throw err;
}
