export { type ModelRoutesDeps, modelAdminRoutes } from './model-routes.js';
export { type ModelInfo, ModelService, type ModelServiceOptions } from './model-service.js';
export {
  type ModelRunSummary,
  noStreamDestinations,
  type OpenDestination,
  runModel,
} from './model-sync.js';
export { openFromConfig } from './open-destination.js';
export { ModelConfig, ModelList, SyncMode } from './spec.js';
