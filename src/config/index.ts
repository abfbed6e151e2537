export { ensureWorkspaceConfig, formatPath, type LoadedConfig, loadConfigFile, parseConfig } from './load.js';
export { Duration, parseDuration, ServerConfig, SourceConfig, TributaryConfig } from './schema.js';
