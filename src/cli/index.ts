#!/usr/bin/env node
import { Command } from 'commander';
import { TributaryError } from '../errors.js';
import { configCheckCommand } from './config-check.js';
import { queryCommand } from './query.js';
import { sourcesListCommand } from './sources.js';
import { startCommand } from './start.js';

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

const config = program.command('config').description('the configuration file');
config
  .command('check')
  .description('validate the configuration and report every problem with its key path')
  .option('-c, --config <file>', 'configuration file')
  .option('-d, --data-dir <dir>', 'workspace folder')
  .action(configCheckCommand);

program.parseAsync().catch((err: unknown) => {
  if (err instanceof TributaryError) process.stderr.write(`${err.code}: ${err.message}\n`);
  else process.stderr.write(`error: ${(err as Error).message}\n`);
  process.exit(err instanceof TributaryError && err.code === 'TRIB_ERR_CONFIG_INVALID' ? 2 : 1);
});
