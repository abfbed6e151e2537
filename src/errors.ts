/**
 * The catalogue of stable error codes. Codes are part of the public API: clients and
 * tests match on `code`, never on the message. Each code has one HTTP status and a
 * message template that tells the user what to do.
 */
export const ErrorCodes = {
  TRIB_ERR_AUTH_MISSING_WRITE_KEY: {
    status: 401,
    message:
      'No write key: send it as Basic auth (key as user name), X-Write-Key, ?writeKey= or "writeKey" in the body',
  },
  TRIB_ERR_AUTH_UNKNOWN_WRITE_KEY: {
    status: 401,
    message: 'Unknown write key: check the source configuration',
  },
  TRIB_ERR_AUTH_ADMIN_TOKEN: {
    status: 401,
    message:
      'This endpoint needs credentials: send "Authorization: Bearer <API token or TRIBUTARY_ADMIN_TOKEN>", or log in (POST /admin/v1/session)',
  },
  TRIB_ERR_AUTH_PROFILE_TOKEN: {
    status: 401,
    message:
      'Profiles need the admin token or the profile read token (identity.readToken): send "Authorization: Bearer <token>"',
  },
  // Users, roles, tokens and sessions (src/governance/, docs/roles.md).
  TRIB_ERR_AUTH_BAD_CREDENTIALS: {
    status: 401,
    message: 'Wrong user name or password: check them, or ask an owner to reset the account',
  },
  TRIB_ERR_AUTH_LOCKED: {
    status: 429,
    message: 'Too many failed logins for this user: try again in %s seconds',
  },
  TRIB_ERR_AUTH_TOKEN_INVALID: {
    status: 401,
    message: 'The API token is unknown, revoked or expired: create a new one with "tributary tokens create"',
  },
  TRIB_ERR_AUTH_SESSION_EXPIRED: {
    status: 401,
    message: 'The console session ended (logged out or expired): log in again',
  },
  TRIB_ERR_AUTH_CSRF: {
    status: 403,
    message:
      'A request authenticated by the session cookie must send the X-CSRF-Token header (the csrfToken of POST /admin/v1/session or GET /admin/v1/me)',
  },
  TRIB_ERR_AUTH_FORBIDDEN: {
    status: 403,
    message:
      'Your role (%s) may not do this: %s needs %s; ask an owner for a role that has it (docs/roles.md)',
  },
  TRIB_ERR_AUTH_NO_RULE: {
    status: 403,
    message:
      'No access rule for %s: every route needs one in src/governance/route-rules.ts (refused until it has one)',
  },
  TRIB_ERR_GOVERNANCE_BAD_REQUEST: { status: 400, message: 'Bad request: %s' },
  TRIB_ERR_GOVERNANCE_USER_EXISTS: { status: 409, message: 'A user named "%s" exists already' },
  TRIB_ERR_GOVERNANCE_USER_NOT_FOUND: { status: 404, message: 'No user named "%s"' },
  TRIB_ERR_GOVERNANCE_LAST_OWNER: {
    status: 409,
    message: '"%s" is the last owner: make another owner first',
  },
  TRIB_ERR_GOVERNANCE_TOKEN_NOT_FOUND: { status: 404, message: 'No API token "%s"' },
  TRIB_ERR_GOVERNANCE_NOT_CONFIGURED: {
    status: 404,
    message: 'Users and tokens need the governance store, which this process was started without',
  },
  TRIB_ERR_PROFILE_NOT_FOUND: { status: 404, message: 'No profile: %s' },
  TRIB_ERR_PROFILE_BAD_IDENTIFIER: {
    status: 400,
    message: 'Name a profile as type:value (email:ada@example.com, user_id:42, profile_id:<id>): %s',
  },
  TRIB_ERR_PROFILE_MERGE_NOT_FOUND: { status: 404, message: 'No active merge: %s' },
  TRIB_ERR_PROFILE_DISABLED: { status: 404, message: 'Identity resolution is off (identity.enabled: false)' },
  TRIB_ERR_MATCH_DISABLED: {
    status: 404,
    message: 'Probabilistic matching is off (identity.matching.enabled: false, embedded store only)',
  },
  TRIB_ERR_MATCH_PAIR_NOT_FOUND: { status: 404, message: 'No match pair: %s' },
  TRIB_ERR_MATCH_NOT_IN_REVIEW: { status: 409, message: 'Not under review: %s' },
  TRIB_ERR_COLLECT_INVALID_JSON: { status: 400, message: 'The body is not valid JSON: %s' },
  TRIB_ERR_COLLECT_BODY_TOO_LARGE: { status: 400, message: 'The decoded body is larger than %s bytes' },
  TRIB_ERR_COLLECT_EVENT_TOO_LARGE: { status: 400, message: 'The event is larger than %s bytes' },
  TRIB_ERR_COLLECT_TOO_MANY_EVENTS: { status: 400, message: 'A batch may hold at most %s events' },
  TRIB_ERR_COLLECT_TOO_DEEP: { status: 400, message: 'JSON nesting is deeper than %s levels' },
  TRIB_ERR_COLLECT_BAD_ENCODING: { status: 400, message: 'The body could not be decoded: %s' },
  TRIB_ERR_COLLECT_UNSUPPORTED_ENCODING: {
    status: 415,
    message: 'Content-Encoding %s is not supported: send identity or gzip',
  },
  TRIB_ERR_HTTP_TOO_MANY_CONNECTIONS: {
    status: 429,
    message:
      'Too many open connections from this address (server.maxConnectionsPerClient); the connection was closed unanswered',
  },
  TRIB_ERR_COLLECT_NOT_AN_OBJECT: { status: 400, message: 'The body must be a JSON object' },
  TRIB_ERR_COLLECT_BATCH_NOT_ARRAY: { status: 400, message: 'The "batch" field must be an array of events' },
  TRIB_ERR_COLLECT_UNKNOWN_TYPE: { status: 400, message: 'Unknown event type "%s"' },
  TRIB_ERR_LOG_APPEND_FAILED: {
    status: 503,
    message: 'The events could not be stored durably; nothing was accepted, retry later',
  },
  TRIB_ERR_SERVER_SHUTTING_DOWN: { status: 503, message: 'The server is shutting down; retry shortly' },
  TRIB_ERR_SERVER_SHUTDOWN_TIMEOUT: {
    status: 503,
    message:
      'The shutdown did not finish within server.shutdownTimeout (%s ms; stuck at: %s): exiting anyway. What was not loaded stays in the log and is loaded at the next start',
  },
  TRIB_ERR_QUERY_FAILED: { status: 400, message: 'The query failed: %s' },
  TRIB_ERR_QUERY_MISSING_SQL: { status: 400, message: 'Send {"sql": "..."} with the query to run' },
  TRIB_ERR_QUERY_NOT_ALLOWED: {
    status: 400,
    message:
      'The query is not allowed: %s. The query endpoint runs one read-only SELECT over the warehouse\'s tables and views, with the table functions range, generate_series, unnest, json_each and json_tree; it reads no files, URLs or settings (docs/architecture.md, "The query endpoint")',
  },
  TRIB_ERR_QUERY_TIMEOUT: {
    status: 400,
    message:
      'The query ran longer than %s ms and was stopped: filter it, aggregate it or raise query.timeout',
  },
  TRIB_ERR_QUERY_BUSY: {
    status: 429,
    message: '%s queries are running already (query.maxConcurrent); retry when one has finished',
  },
  TRIB_ERR_QUERY_NOT_CONFIGURED: {
    status: 503,
    message:
      'The query endpoint needs a read-only connection in scale-out: set state.queryConnectionString to a role with SELECT only (docs/operations.md, "The query role")',
  },
  TRIB_ERR_COLLECT_WEBHOOK_REQUEST: {
    status: 400,
    message:
      'This is a %s webhook, and the collection API takes Segment events only (nothing was stored): declare a source of type webhook and point the vendor at POST <server>/webhooks/<source id> (README, "Webhook sources")',
  },
  TRIB_ERR_WEBHOOK_UNKNOWN_SOURCE: {
    status: 404,
    message: 'No enabled webhook source "%s": check the URL against the ids of sources of type webhook',
  },
  TRIB_ERR_WEBHOOK_SIGNATURE_MISSING: {
    status: 401,
    message:
      'No %s header: webhook source "%s" takes only requests signed as its verify.kind says; send the vendor\'s signed webhook here, or correct verify.kind. Nothing was stored',
  },
  TRIB_ERR_WEBHOOK_SIGNATURE_INVALID: {
    status: 401,
    message:
      'The %s signature does not match the body: set verify.secret of webhook source "%s" to the signing secret the vendor shows for this endpoint, and make sure nothing between them rewrites the body. Nothing was stored',
  },
  TRIB_ERR_WEBHOOK_TIMESTAMP_STALE: {
    status: 401,
    message:
      'The timestamp signed in %s is outside the tolerance of webhook source "%s": a replayed request, or a clock that is off; check the server clock, or raise verify.tolerance. Nothing was stored',
  },
  TRIB_ERR_WEBHOOK_BODY_TOO_LARGE: {
    status: 413,
    message: 'The body is larger than %s bytes: raise maxBodyBytes of the webhook source (at most 4 MiB)',
  },
  // What became of one webhook delivery (failed_events.code; acknowledged 2xx, so the vendor does not retry).
  TRIB_ERR_WEBHOOK_NOT_JSON: { status: 422, message: 'The webhook body is not JSON: %s' },
  TRIB_ERR_WEBHOOK_UNMATCHED: {
    status: 422,
    message: 'No rule of the webhook source matches the payload: %s',
  },
  TRIB_ERR_WEBHOOK_MAPPING_INVALID: {
    status: 422,
    message: 'The event the webhook mapping made is not valid: %s',
  },
  TRIB_ERR_WEBHOOK_FUNCTION_FAILED: { status: 422, message: "The webhook source's function failed: %s" },
  TRIB_ERR_NOT_FOUND: { status: 404, message: 'No route %s' },
  TRIB_ERR_INTERNAL: { status: 500, message: 'Internal error; the server log has the details' },
  TRIB_ERR_CONFIG_INVALID: { status: 500, message: 'The configuration is invalid:\n%s' },
  TRIB_ERR_CONFIG_NOT_FOUND: { status: 500, message: 'No configuration file at %s' },
  TRIB_ERR_CONFIG_CHANGE_INVALID: {
    status: 400,
    message: 'The change would leave the configuration invalid, so nothing was changed:\n%s',
  },
  TRIB_ERR_CONFIG_VERSION_CONFLICT: {
    status: 409,
    message:
      'The configuration is at version %s, not %s (If-Match): someone changed it meanwhile; read it again (GET /admin/v1/config) and send your change again',
  },
  TRIB_ERR_CONFIG_VERSION_NOT_FOUND: {
    status: 404,
    message: 'No configuration version %s: list them with GET /admin/v1/config/versions',
  },
  TRIB_ERR_CONFIG_ENTRY_NOT_FOUND: { status: 404, message: 'No %s "%s" in the configuration' },
  TRIB_ERR_CONFIG_BAD_REQUEST: { status: 400, message: 'Bad configuration request: %s' },
  TRIB_ERR_CONFIG_NEEDS_RESTART: {
    status: 409,
    message:
      'This change cannot be applied to the running server (%s), so nothing was changed: make it in the configuration file and restart',
  },
  TRIB_ERR_CONFIG_APPLY_FAILED: {
    status: 500,
    message: 'The change could not be applied, so nothing was changed: %s',
  },
  TRIB_ERR_CONFIG_NOT_MANAGED: {
    status: 404,
    message:
      'This server keeps no configuration versions (it was started without its configuration file, or in scale-out): change the configuration file and restart',
  },
  TRIB_ERR_PLAN_INVALID: { status: 400, message: 'The tracking plan is invalid: %s' },
  TRIB_ERR_TRANSFORM_INVALID: { status: 500, message: 'The transformation cannot be loaded: %s' },
  // What a transformation did with one event (failed_events.code; the event fails, the rest go on).
  TRIB_ERR_TRANSFORM_THREW: { status: 422, message: 'The transformation threw: %s' },
  TRIB_ERR_TRANSFORM_TIMEOUT: { status: 422, message: 'The transformation ran longer than its timeout: %s' },
  TRIB_ERR_TRANSFORM_MEMORY: {
    status: 422,
    message: 'The transformation used more than its memoryLimit (objects, strings and ArrayBuffers): %s',
  },
  TRIB_ERR_TRANSFORM_ASYNC: {
    status: 422,
    message: 'The transformation returned a Promise; without grants.network it must be synchronous',
  },
  TRIB_ERR_TRANSFORM_BAD_OUTPUT: {
    status: 422,
    message: 'The transformation returned something not an event: %s',
  },
  TRIB_ERR_TRANSFORM_CRASHED: { status: 500, message: 'The transformation sandbox failed: %s' },
  TRIB_ERR_TRANSFORM_UNRESPONSIVE: {
    status: 500,
    message: 'The transformation sandbox stopped answering during this event and was replaced: %s',
  },
  TRIB_ERR_FAILED_NOT_FOUND: { status: 404, message: 'No failed event %s' },
  TRIB_ERR_FAILED_BAD_REQUEST: { status: 400, message: 'Bad failed-event request: %s' },
  TRIB_ERR_LOAD_UNSTORABLE: {
    status: 422,
    message:
      'The warehouse refused the event (%s); it is kept in failed_events (stage load) as the warehouse received it, and the rest was loaded: fix the client or the transformation that produced it (a load failure is not retried: the same payload would be refused again)',
  },
  TRIB_ERR_LOG_SEGMENT_MISSING: {
    status: 500,
    message:
      'The event log is missing %s in %s: the log created it, and its events would be gone from the raw archive and from replays. Restore the file from a backup and start again; to go on without its events, delete its row from the list in log.duckdb: DELETE FROM segments WHERE first_offset IN (%s)',
  },
  TRIB_ERR_LOG_BEHIND_WAREHOUSE: {
    status: 500,
    message:
      'The warehouse has loaded the log up to offset %s, but the log ends at %s: the log was lost or restored from an older copy, and new events would get offsets the warehouse counts as loaded. Restore the log (log.duckdb and log-segments/) from a backup; or, to load the warehouse again from this log, move warehouse.duckdb away and start again',
  },
  TRIB_ERR_STATE_OFFSET_MOVED: {
    status: 409,
    message:
      'Consumer "%s" stored offset %s, not %s as this writer expected: another process took its partition over and moved on; this batch was not written',
  },
  TRIB_ERR_DESTINATION_SETUP: {
    status: 500,
    message: 'Destination "%s" could not be set up: %s; check its settings under destinations:',
  },
  TRIB_ERR_DEST_RECORD_REFUSED: {
    status: 422,
    message: 'Destination "%s" refused the event, which was left out of the load (the rest was loaded): %s',
  },
  TRIB_ERR_DEST_FOREIGN_OFFSETS: {
    status: 500,
    message:
      'Destination "%s" holds offsets of another event log (%s) in workspace "%s", not of this one (%s): the log was replaced (a new data folder or stream) or another workspace of the same name loads into this database. Loading would skip events, so it does not start. To load this log from its start into the same tables (stored rows are kept; rows are merged on id), set startOver: true on the destination and restart; to keep two workspaces apart, give each its own workspace: name',
  },
  TRIB_ERR_DEST_FOREIGN_LAKE: {
    status: 500,
    message:
      'Parquet destination "%s" holds files of another event log or workspace (%s), not of this one (%s): loading would skip events and could overwrite its files, so it does not start. Give the destination a new path (or move the folder away) to load this log from its start',
  },
  TRIB_ERR_DESTINATION_TRANSFORM_UNSUPPORTED: {
    status: 500,
    message:
      'Destination "%s" is a parquet lake, which takes no transformations (a retry could not load into it without moving its offset); remove its transformations:',
  },
  TRIB_ERR_RETL_MODEL_NOT_FOUND: {
    status: 404,
    message: 'No reverse-ETL model "%s": models are declared under models: in the configuration',
  },
  TRIB_ERR_RETL_MODEL_RUNNING: {
    status: 409,
    message: 'Model "%s" is running already; wait for its run to finish (tributary models runs %s)',
  },
  TRIB_ERR_RETL_BAD_KEY: {
    status: 422,
    message:
      'Model "%s" returned rows whose primary key is NULL or shared by several rows (%s); they were not sent: make the primary key unique and not NULL in the SQL',
  },
  TRIB_ERR_RETL_DESTINATION: {
    status: 502,
    message: 'Model "%s" could not open its destination "%s": %s; check destinations: in the configuration',
  },
  TRIB_ERR_SOURCE_UNREACHABLE: {
    status: 502,
    message:
      'Source "%s" cannot be reached (%s): check its host and port, that the server is running and that this machine may connect to it (firewall, TLS)',
  },
  TRIB_ERR_SOURCE_AUTH: {
    status: 502,
    message:
      'Source "%s" refused the login (%s): check its user and the password in the environment variable its configuration names',
  },
  TRIB_ERR_SOURCE_DATABASE_NOT_FOUND: {
    status: 502,
    message: 'Source "%s" has no database %s: check the database name in its configuration',
  },
  TRIB_ERR_SOURCE_PERMISSION: {
    status: 502,
    message: 'Source "%s" may not read %s (%s): grant its user SELECT on it',
  },
  TRIB_ERR_SOURCE_STREAM_NOT_FOUND: {
    status: 422,
    message: 'Source "%s" cannot read stream %s (%s): check its table or query in the configuration',
  },
  TRIB_ERR_SOURCE_CURSOR_INVALID: {
    status: 422,
    message:
      'Stream %s cannot be read incrementally by %s: %s; choose a cursor column `tributary sources discover` lists',
  },
  TRIB_ERR_SOURCE_STATE_INVALID: {
    status: 422,
    message:
      'The saved state of stream %s does not fit its configuration (%s): the cursor or key changed; reset the stream to read it from the start',
  },
  TRIB_ERR_SOURCE_CONNECTION_LOST: {
    status: 503,
    message:
      'Source "%s" lost its connection during the read (%s); the sync is retried from its last saved state',
  },
  TRIB_ERR_SOURCE_QUERY_FAILED: {
    status: 502,
    message: 'Source "%s" failed to read stream %s: %s',
  },
  TRIB_ERR_DEST_CHECK_UNREACHABLE: {
    status: 502,
    message: 'Destination "%s": nothing answers at %s (%s); check its host and port',
  },
  TRIB_ERR_DEST_CHECK_AUTH: {
    status: 502,
    message:
      'Destination "%s": the server refused user %s (%s); check its user and password (the password as an ${ENV} reference)',
  },
  TRIB_ERR_DEST_CHECK_DATABASE: {
    status: 502,
    message: 'Destination "%s": database %s does not exist (%s); create it or fix its database',
  },
  TRIB_ERR_DEST_CHECK_PATH: {
    status: 500,
    message: 'Destination "%s": cannot write at %s (%s); check its path',
  },
  TRIB_ERR_DEST_CHECK_FAILED: {
    status: 502,
    message: 'Destination "%s" failed its check: %s',
  },
  // Stream destinations (src/destinations/<kind>/, the connectors of src/destinations/stream.ts).
  TRIB_ERR_DEST_CHECK_VHOST: {
    status: 502,
    message: 'Destination "%s": virtual host %s is not open to this user (%s); create it or fix its vhost',
  },
  TRIB_ERR_DEST_PAYLOAD_UNENCODABLE: {
    status: 422,
    message:
      'Destination "%s" cannot encode the message (%s); fix its mapping or the event, then `tributary failed retry` re-sends it',
  },
  TRIB_ERR_DEST_MESSAGE_TOO_LARGE: {
    status: 413,
    message:
      'Destination "%s": the message is %s bytes, more than maxMessageBytes (%s); trim it with a transformation or raise the limit (and the receiver\'s)',
  },
  TRIB_ERR_DEST_ROW_REFUSED: {
    status: 422,
    message:
      'Destination "%s": the table refused the row (%s); fix the column mapping or the table, then `tributary failed retry` re-sends it',
  },
  // Streaming destinations (src/destinations/delivery/): failed_events.code of stage destination:<id>.
  TRIB_ERR_DELIVERY_REFUSED: {
    status: 422,
    message:
      'Destination "%s" refused the event for good (%s): fix the event, its body template or the receiver, then send it again with `tributary failed retry`',
  },
  TRIB_ERR_DELIVERY_ENCODE: {
    status: 422,
    message:
      'Destination "%s" cannot encode the event (%s): fix its body template (or the event), then send it again with `tributary failed retry`',
  },
  TRIB_ERR_DELIVERY_EXPIRED: {
    status: 503,
    message:
      'Destination "%s" did not take the event within its retry window of %s ms (last error: %s): once the receiver is back, send it again with `tributary failed retry --stage destination:<id>`',
  },
  // Sources (src/sources/): check, read and record failures. Record-level codes are failed_events.code (stage source).
  TRIB_ERR_SOURCE_NOT_FOUND: {
    status: 404,
    message: 'No source "%s": add it under sources: in the configuration',
  },
  TRIB_ERR_SOURCE_NOT_PULL: {
    status: 400,
    message:
      'Source "%s" is of type %s, which Tributary does not read from (it receives): only file and database sources can be checked, discovered, synced or imported into',
  },
  TRIB_ERR_TRACE_NOT_FOUND: {
    status: 404,
    message:
      'No trace of message %s: the event log holds no record with this messageId (check the id; records are never removed from the embedded log)',
  },
  TRIB_ERR_LINEAGE_UNSUPPORTED: {
    status: 501,
    message:
      "%s needs the raw archive, which this deployment's event log does not offer yet (the embedded DuckDB log does; NATS does not)",
  },
  TRIB_ERR_REPLAY_BAD_REQUEST: {
    status: 400,
    message:
      'Bad replay request: %s. Send {"source": ID, "from": ISO time, "to": ISO time, "destinations"?: [IDs], "dryRun"?: bool, "rate"?: events/s}',
  },
  TRIB_ERR_REPLAY_UNKNOWN_SOURCE: {
    status: 404,
    message: 'No source %s: replay a source of the configuration',
  },
  TRIB_ERR_REPLAY_UNKNOWN_DESTINATION: {
    status: 404,
    message:
      'No destination %s that takes a replay: name a configured duckdb, postgres or streaming destination (parquet lakes are not replayed into; a streaming one must be enabled)',
  },
  TRIB_ERR_REPLAY_BUSY: {
    status: 409,
    message: 'A replay (%s) is running; wait for it (GET /admin/v1/replay/<id>) and start this one after',
  },
  TRIB_ERR_REPLAY_NOT_FOUND: { status: 404, message: 'No replay run %s' },
  TRIB_ERR_PRIVACY_BAD_REQUEST: {
    status: 400,
    message:
      'The deletion request is not valid: %s. Send {"identities": ["user_id:u1", "email:ada@example.com"]} (1 to 5,000 per request)',
  },
  TRIB_ERR_PRIVACY_MASKED: {
    status: 403,
    message:
      'Personal data is masked for your role, so this is not allowed: %s. Ask an owner or admin, or read the masked views and profiles',
  },
  TRIB_ERR_PRIVACY_NOT_FOUND: {
    status: 404,
    message: 'No deletion request %s: list them with GET /admin/v1/privacy/deletions',
  },
  TRIB_ERR_SOURCE_BUSY: {
    status: 409,
    message:
      'Source "%s" is syncing already (run %s); one sync of a source runs at a time: wait for it (GET /admin/v1/sources/%s/runs) and try again',
  },
  TRIB_ERR_SOURCE_UNKNOWN_STREAM: { status: 400, message: 'Source "%s" has no stream "%s" (streams: %s)' },
  TRIB_ERR_SOURCE_PATH_NOT_FOUND: {
    status: 400,
    message:
      "No file matches %s: check the path (relative paths start at the configuration file's folder) and that the process may read it",
  },
  TRIB_ERR_SOURCE_FILE_UNREADABLE: { status: 400, message: 'The file %s cannot be read: %s' },
  TRIB_ERR_SOURCE_FILE_TRUNCATED: {
    status: 422,
    message:
      'The file %s ends early (%s): rows before the damage were imported; the rest is missing. Replace the file with a complete copy and import it again',
  },
  TRIB_ERR_SOURCE_CONNECTION: {
    status: 502,
    message: 'Cannot connect to the source (%s): check the host, port and that the server is running',
  },
  TRIB_ERR_SOURCE_READ_FAILED: {
    status: 502,
    message:
      'Reading source "%s" failed after %s attempts: %s. What was committed before stays; the next sync resumes from there',
  },
  TRIB_ERR_SOURCE_BAD_ROW: {
    status: 422,
    message:
      'The row cannot be read (%s): fix it in the source and import the file again; the other rows were imported',
  },
  TRIB_ERR_SOURCE_BAD_VALUE: {
    status: 422,
    message:
      "A value does not fit its column (%s): fix the value, or the column type under the stream's columns: (files) or cast the column in a query stream (databases); the other rows were read",
  },
  TRIB_ERR_SOURCE_EVENT_INVALID: {
    status: 422,
    message:
      "The row does not make a valid event (%s): check the stream's events: mapping (userId or anonymousId column, event name, timestamp column)",
  },
  TRIB_ERR_SOURCE_MISSING_KEY: {
    status: 422,
    message:
      "The row has no value in its primary key column %s: objects need one; fix the row or the stream's primaryKey",
  },
  TRIB_ERR_SOURCE_UNSTORABLE: {
    status: 422,
    message: 'The store refused the row (%s); the other rows were stored: fix the value or the column type',
  },
} as const satisfies Record<string, { status: number; message: string }>;

export type ErrorCode = keyof typeof ErrorCodes;

/** An error with a stable code and an HTTP status. */
export class TributaryError extends Error {
  readonly code: ErrorCode;
  readonly statusCode: number;

  constructor(code: ErrorCode, args: readonly (string | number)[] = [], options?: { cause?: unknown }) {
    let i = 0;
    const message = ErrorCodes[code].message.replace(/%s/g, () => String(args[i++] ?? ''));
    super(message, options);
    this.name = 'TributaryError';
    this.code = code;
    this.statusCode = ErrorCodes[code].status;
  }

  toJSON(): { success: false; code: ErrorCode; message: string } {
    return { success: false, code: this.code, message: this.message };
  }
}

/** Reasons a single event is rejected while the rest of its batch is accepted. */
export const EventRejectionCodes = {
  TRIB_ERR_EVENT_NOT_OBJECT: 'the event must be a JSON object',
  TRIB_ERR_EVENT_UNKNOWN_TYPE: 'the event type must be one of track, identify, page, screen, group, alias',
  TRIB_ERR_EVENT_MISSING_IDENTITY: 'the event needs a userId or an anonymousId',
  TRIB_ERR_EVENT_MISSING_EVENT_NAME: 'a track event needs a non-empty "event" name',
  TRIB_ERR_EVENT_MISSING_GROUP_ID: 'a group event needs a "groupId"',
  TRIB_ERR_EVENT_MISSING_PREVIOUS_ID: 'an alias event needs a "previousId"',
  TRIB_ERR_EVENT_MESSAGE_ID_TOO_LONG: 'messageId is longer than 100 characters',
  TRIB_ERR_EVENT_INVALID_FIELD: 'a field has the wrong type',
  TRIB_ERR_EVENT_INVALID_TIMESTAMP:
    'timestamp, originalTimestamp and sentAt must be ISO-8601 date-times of real days between years 0001 and 9999',
  TRIB_ERR_EVENT_TOO_LARGE: 'the event is larger than 32 KB',
  TRIB_ERR_EVENT_PII_BLOCKED:
    "the source's privacy policy blocks events carrying this kind of data; the event was not stored",
} as const;

export type EventRejectionCode = keyof typeof EventRejectionCodes;
