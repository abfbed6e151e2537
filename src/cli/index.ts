#!/usr/bin/env -S node --max-semi-space-size=64
import { Command } from 'commander';
import { TributaryError } from '../errors.js';
import { auditCommand } from './audit.js';
import { configCheckCommand } from './config-check.js';
import { configDiffCommand } from './config-diff.js';
import { configExportCommand } from './config-export.js';
import { configRevertCommand } from './config-revert.js';
import { configVersionsCommand } from './config-versions.js';
import { failedListCommand } from './failed-list.js';
import { failedRetryCommand } from './failed-retry.js';
import { failedShowCommand } from './failed-show.js';
import { importCommand } from './import.js';
import { modelsListCommand, modelsRunCommand, modelsRunsCommand } from './models.js';
import { planCheckCommand } from './plan-check.js';
import { planInferCommand } from './plan-infer.js';
import { privacyDeleteCommand } from './privacy-delete.js';
import { privacyStatusCommand } from './privacy-status.js';
import {
  profilesExplainCommand,
  profilesGetCommand,
  profilesMatchDecideCommand,
  profilesMatchesCommand,
  profilesSearchCommand,
  profilesUnmergeCommand,
} from './profiles.js';
import { queryCommand } from './query.js';
import { replayCommand } from './replay.js';
import {
  sourcesCheckCommand,
  sourcesDiscoverCommand,
  sourcesListCommand,
  sourcesSyncCommand,
} from './sources.js';
import { startCommand } from './start.js';
import { statsCommand } from './stats.js';
import { tokensCreateCommand } from './tokens-create.js';
import { tokensListCommand } from './tokens-list.js';
import { tokensRevokeCommand } from './tokens-revoke.js';
import { traceCommand } from './trace.js';
import { usersAddCommand } from './users-add.js';
import { usersListCommand } from './users-list.js';
import { usersRemoveCommand } from './users-remove.js';

const program = new Command();
program.name('tributary').description('Open-source customer data platform').showHelpAfterError();

program
  .command('start')
  .description('run the server: collection API, event log, warehouse loader')
  .option(
    '-c, --config <file>',
    'configuration file (default ./tributary.yaml, else <data-dir>/tributary.yaml)',
  )
  .option('-p, --port <n>', 'HTTP port (overrides server.port)')
  .option('--host <address>', 'address to listen on (overrides server.host)')
  .option('-d, --data-dir <dir>', 'folder of the embedded databases (default ./.tributary)')
  .option(
    '--role <role>',
    'scale-out only: ingest (collection API → NATS), worker (partitions → PostgreSQL) or all',
    'all',
  )
  .option('--processes <n>', 'scale-out ingest only: processes sharing the port (node:cluster)', '1')
  .action(startCommand);

program
  .command('query')
  .description("run SQL on the running server's warehouse (needs the admin token)")
  .argument('<sql>', 'the query')
  .option('--json', 'print rows as a JSON array')
  .option('--url <url>', 'server URL (default $TRIBUTARY_URL, else the configured port on 127.0.0.1)')
  .option('-c, --config <file>', 'configuration file, to find the port')
  .option('-d, --data-dir <dir>', 'workspace folder, to find the configuration and admin token')
  .action(queryCommand);

const sources = program.command('sources').description('the configured sources');
sources
  .command('list')
  .description('list sources and their write keys')
  .option('-c, --config <file>', 'configuration file')
  .option('-d, --data-dir <dir>', 'workspace folder')
  .option('--json', 'print as JSON')
  .action(sourcesListCommand);
const sourceVerb = (c: Command) =>
  c
    .argument('<id>', 'source id')
    .option('--json', 'print JSON')
    .option(
      '--url <url>',
      'server URL (default: the workspace server if one runs, else the files are opened here)',
    )
    .option('-c, --config <file>', 'configuration file')
    .option('-d, --data-dir <dir>', 'workspace folder');
sourceVerb(
  sources.command('check').description('try the source: a wrong path, host or password is a clear error'),
).action(sourcesCheckCommand);
sourceVerb(
  sources.command('discover').description('the streams the source can read: columns, types, keys'),
).action(sourcesDiscoverCommand);
sourceVerb(
  sources
    .command('sync')
    .description('read the source now, from its committed state')
    .option('--stream <name...>', 'only these streams'),
).action(sourcesSyncCommand);

const models = program.command('models').description('reverse-ETL models on the running server');
const modelOptions = (c: Command) =>
  c
    .option('--json', 'print JSON')
    .option('--url <url>', 'server URL (default $TRIBUTARY_URL, else the configured port on 127.0.0.1)')
    .option('-c, --config <file>', 'configuration file, to find the port')
    .option('-d, --data-dir <dir>', 'workspace folder, to find the configuration and admin token');
modelOptions(
  models.command('list').description('the models: destination, sync mode, schedule, last run'),
).action(modelsListCommand);
modelOptions(
  models
    .command('run')
    .description('run the model now: diff against the last synced snapshot, send what changed')
    .argument('<id>', 'model id'),
).action(modelsRunCommand);
modelOptions(
  models
    .command('runs')
    .description("the model's runs, newest first: rows added, changed, removed, failed")
    .argument('<id>', 'model id')
    .option('--limit <n>', 'runs to show (default 20)'),
).action(modelsRunsCommand);

const profiles = program.command('profiles').description('unified profiles on the running server');
const profileOptions = (c: Command) =>
  c
    .option('--json', 'print JSON')
    .option('--url <url>', 'server URL (default $TRIBUTARY_URL, else the configured port on 127.0.0.1)')
    .option('--token <token>', 'profile read token (default $TRIBUTARY_PROFILE_TOKEN, else the admin token)')
    .option('-c, --config <file>', 'configuration file, to find the port')
    .option('-d, --data-dir <dir>', 'workspace folder, to find the configuration and admin token');
profileOptions(
  profiles
    .command('get')
    .description('a profile: traits, identifiers, computed traits, recent events, merges')
    .argument('<identifier>', 'type:value, e.g. email:ada@example.com, user_id:42, profile_id:<id>')
    .option('--events <n>', 'recent events to show (default 10)'),
).action(profilesGetCommand);
profileOptions(
  profiles
    .command('search')
    .description('profiles whose trait has the value')
    .argument('<trait>')
    .argument('<value>')
    .option('--limit <n>', 'most profiles (default 50)'),
).action(profilesSearchCommand);
profileOptions(
  profiles
    .command('explain')
    .description('why identifiers are, or are not, one person')
    .argument('<identifier>', 'type:value')
    .argument('[other]', 'a second type:value'),
).action(profilesExplainCommand);
profileOptions(
  profiles
    .command('unmerge')
    .description('split a merge apart (needs the admin token); the link is blocked unless --no-block')
    .argument('<merge-id>', 'from `profiles get` (merges)')
    .option('--no-block', 'let later events link the two sides again'),
).action(profilesUnmergeCommand);
profileOptions(
  profiles
    .command('matches')
    .description(
      'probabilistic matches: the review list (default), or pairs merged, accepted, rejected, refused',
    )
    .option('--status <status>', 'review, merged, accepted, rejected or refused (default review)')
    .option('--limit <n>', 'most pairs (default 50)')
    .option('--run', 'run a full match first (needs the admin token)')
    .option('--accept <pair-id>', 'accept a pair under review: merge its profiles (admin token)')
    .option('--reject <pair-id>', 'reject a pair under review: never proposed again (admin token)'),
).action(async (opts) => {
  if (opts.accept || opts.reject) return profilesMatchDecideCommand(opts);
  return profilesMatchesCommand(opts);
});

program
  .command('import')
  .description(
    "read a CSV, JSONL or Parquet file (gzipped or not) into a source's stream: objects and/or events as the stream says",
  )
  .argument('<file>', 'the file (the former form `import csv <file>` still works)')
  .argument('[file2]')
  .requiredOption('--source <id>', 'configured source (a file source; or an http source with --id-column)')
  .option('--stream <name>', "the source's stream (default: its only one)")
  .option(
    '--id-column <column>',
    'http source: column with the record key; the anonymous id becomes <source>:<key>',
  )
  .option('--user-id-column <column>', 'http source: column with the userId, where the records have one')
  .option('--timestamp-column <column>', 'http source: column with the time the record was last updated')
  .option(
    '--map <trait=Column...>',
    'http source: trait from a column, e.g. --map email=Email --map name="Full Name"',
  )
  .option('--no-progress', 'no progress bar')
  .option('--json', 'print the summary as JSON')
  .option(
    '--url <url>',
    'server URL to upload to (default: the workspace server if one runs, else the files are opened here)',
  )
  .option('-c, --config <file>', 'configuration file')
  .option('-d, --data-dir <dir>', 'workspace folder')
  .action(importCommand);

const config = program.command('config').description('the configuration file');
config
  .command('check')
  .description('validate the configuration and report every problem with its key path')
  .option('-c, --config <file>', 'configuration file')
  .option('-d, --data-dir <dir>', 'workspace folder')
  .action(configCheckCommand);

/** The options of every verb that talks to the running server. */
function serverOptions(cmd: Command): Command {
  return cmd
    .option('--url <url>', 'server URL (default $TRIBUTARY_URL, else the workspace server)')
    .option('-c, --config <file>', 'configuration file')
    .option('-d, --data-dir <dir>', 'workspace folder');
}

serverOptions(
  config
    .command('versions')
    .description(
      'versions of the configuration (the file at each start it changed, and changes through the admin API)',
    )
    .option('--limit <n>', 'most versions listed (default 100)')
    .option('--json', 'print as JSON'),
).action(configVersionsCommand);
serverOptions(
  config
    .command('diff')
    .description('what changed between two versions (default: the running one and the one before)')
    .argument('[from]', 'version number')
    .argument('[to]', 'version number (default the running one)')
    .option('--json', 'print as JSON'),
).action(configDiffCommand);
serverOptions(
  config
    .command('revert')
    .description('make a new version equal to version N and apply it to the running server')
    .argument('<n>', 'version number')
    .option('-m, --message <text>', 'why (stored with the version)'),
).action(configRevertCommand);
serverOptions(
  config
    .command('export')
    .description('write the running version (or --version N) as YAML, ${ENV} references as written, for git')
    .option('-o, --output <file>', 'file to write (default standard output)')
    .option('--version <n>', 'version number (default the running one)'),
).action(configExportCommand);

serverOptions(
  program
    .command('stats')
    .description('received, accepted, rejected, passed, blocked, failed, pending per source and stage')
    .option('--json', 'print as JSON'),
).action(statsCommand);

serverOptions(
  program
    .command('trace')
    .description(
      "one message's whole path: received, each stage, its profile, warehouse rows, delivery attempts",
    )
    .argument('<messageId>')
    .option('--json', 'print as JSON'),
).action(traceCommand);
serverOptions(
  program
    .command('replay')
    .description(
      "run a source's archived events of a time range through the current pipeline into destinations",
    )
    .requiredOption('--source <id>', 'the source whose events are replayed')
    .requiredOption('--from <time>', 'start of the receipt-time range (ISO-8601), inclusive')
    .requiredOption('--to <time>', 'end of the range (ISO-8601), exclusive')
    .option('--destination <id...>', 'only these destinations (default: every warehouse destination)')
    .option('--dry-run', 'count what would be delivered; write nothing')
    .option('--rate <n>', 'most events read per second')
    .option('--json', 'print the finished run as JSON'),
).action(replayCommand);

const failed = program.command('failed').description('the failed-event store');
serverOptions(
  failed
    .command('list')
    .description('failed events, newest first (not yet retried unless --all)')
    .option('--source <id>', 'only this source')
    .option('--stage <stage>', 'only this stage (collect, privacy, mapping, plan, transform)')
    .option('--code <code>', 'only this reason code')
    .option('--all', 'include events already retried')
    .option('--limit <n>', 'most rows (default 100)')
    .option('--json', 'print as JSON'),
).action(failedListCommand);
serverOptions(
  failed
    .command('show')
    .description('one failed event: payload, reason, log lines')
    .argument('<id>')
    .option('--json'),
).action(failedShowCommand);
serverOptions(
  failed
    .command('retry')
    .description('run failed events through the current rules again (no duplicates)')
    .argument('[ids...]', 'failed event ids')
    .option('--source <id>', 'every failed event of this source')
    .option('--stage <stage>', 'every failed event of this stage')
    .option('--code <code>', 'every failed event with this code')
    .option('--wait', 'wait for the loader and report what became of each')
    .option('--json', 'print as JSON'),
).action(failedRetryCommand);

const plan = program.command('plan').description('tracking plans');
serverOptions(
  plan
    .command('infer')
    .description('draft a plan from the archived events of a source')
    .requiredOption('--source <id>', 'the source')
    .option('--last <n>', 'newest archived events to read (default 10000)')
    .option('--name <name>', 'plan name (default <source>-draft)')
    .option('-o, --out <file>', 'write the YAML here instead of stdout'),
).action(planInferCommand);
serverOptions(
  plan
    .command('check')
    .description('validate a plan file and report what it would do to the last N archived events')
    .argument('<file>', 'plan file (YAML or JSON)')
    .option('--source <id>', 'only events of this source (its mapping is applied first)')
    .option('--last <n>', 'newest archived events (default 1000)')
    .option('--offline', 'only validate the file')
    .option('--json', 'print as JSON'),
).action(planCheckCommand);

const privacy = program.command('privacy').description('deletion requests and suppression');
serverOptions(
  privacy
    .command('delete')
    .description(
      'delete people everywhere (events, log, warehouses, lake, profiles) and drop their later events',
    )
    .argument(
      '[identities...]',
      'type:value each (user_id:u1, email:ada@example.com, anonymous_id:…); up to 5,000',
    )
    .option('--file <file>', 'read more identities from a file, one type:value a line')
    .option('--json', 'print the request as JSON'),
).action(privacyDeleteCommand);
serverOptions(
  privacy
    .command('status')
    .description(
      "a deletion request's status per store (pending, done, failed with the reason), or the latest requests",
    )
    .argument('[id]', 'the request id printed by "privacy delete"')
    .option('--json', 'print as JSON'),
).action(privacyStatusCommand);
// Users, API tokens and the audit trail (docs/roles.md). `--token` (or TRIBUTARY_TOKEN) acts as
// that token's user; by default the workspace's admin token is sent.
const governed = (cmd: Command) =>
  serverOptions(cmd).option(
    '--token <token>',
    'API token to act with (default $TRIBUTARY_TOKEN, else the admin token)',
  );
const users = program.command('users').description('users of the console and the admin API (owner)');
governed(
  users
    .command('add')
    .description('add a user with a generated password, printed once')
    .argument('<name>')
    .requiredOption('--role <role>', 'owner, admin, engineer, analyst or viewer')
    .option('--sources <list>', 'limit to these source ids and label:NAME entries, comma-separated')
    .option('--json', 'print as JSON'),
).action(usersAddCommand);
governed(
  users.command('list').description('users, roles and source limits').option('--json', 'print as JSON'),
).action(usersListCommand);
governed(
  users
    .command('remove')
    .description('remove a user: their sessions end and their tokens are revoked')
    .argument('<name>')
    .option('--json', 'print as JSON'),
).action(usersRemoveCommand);

const tokens = program.command('tokens').description('API tokens (shown once, stored hashed)');
governed(
  tokens
    .command('create')
    .description('create an API token: by default your own, with your role and sources')
    .argument('<name>')
    .option('--role <role>', 'a role up to your own')
    .option('--sources <list>', 'limit to these source ids and label:NAME entries, comma-separated')
    .option('--scopes <list>', 'limit to these permissions (docs/roles.md), comma-separated')
    .option('--user <name>', "another user's token (owner)")
    .option('--service', 'a token of no user, for a service (owner)')
    .option('--expires <days>', 'expire after this many days')
    .option('--json', 'print as JSON'),
).action(tokensCreateCommand);
governed(
  tokens
    .command('list')
    .description('tokens (yours; an owner sees all), never their values')
    .option('--json'),
).action(tokensListCommand);
governed(
  tokens.command('revoke').description('revoke a token at once').argument('<id>').option('--json'),
).action(tokensRevokeCommand);

governed(
  program
    .command('audit')
    .description('the audit trail, newest first: who did what, when, from where, and the outcome')
    .option('--since <when>', 'an ISO time or a duration back from now (24h, 7d)')
    .option('--actor <name>', 'a user or token name (or id)')
    .option('--action <action>', 'an action (query.run) or a prefix ending in "." (users.)')
    .option('--outcome <outcome>', 'ok, denied or error')
    .option('--limit <n>', 'most entries (default 100)')
    .option('--json', 'print as JSON'),
).action(auditCommand);

program.parseAsync().catch((err: unknown) => {
  if (err instanceof TributaryError) process.stderr.write(`${err.code}: ${err.message}\n`);
  else process.stderr.write(`error: ${(err as Error).message}\n`);
  process.exit(err instanceof TributaryError && err.code === 'TRIB_ERR_CONFIG_INVALID' ? 2 : 1);
});
