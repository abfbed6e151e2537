export { PostgresIdentityStore, type PostgresIdentityStoreOptions } from './postgres-identity-store.js';
export { PostgresProfiles } from './postgres-profiles.js';
export { SharedIdentityStage, type SharedIdentityStageOptions } from './shared-identity-stage.js';
