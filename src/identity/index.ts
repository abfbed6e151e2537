export { DuckDBIdentityStore } from './duckdb/duckdb-identity-store.js';
export { compileRules, extractIdentifiers, type Identifier, type IdentityRules } from './identifiers.js';
export { type Decision, IdentityEngine, type MergeRecord, type Profile } from './identity-engine.js';
export { IdentityMetrics } from './identity-metrics.js';
export { IdentityStage, type ProfileView } from './identity-stage.js';
export type { IdentityStore } from './identity-store.js';
export { profileRoutes } from './profile-routes.js';
