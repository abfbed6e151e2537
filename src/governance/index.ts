export {
  type AccessControlOptions,
  ADMIN_TOKEN_PRINCIPAL,
  allows,
  installAccessControl,
  READ_TOKEN_PRINCIPAL,
  type RegisteredRoutes,
  registeredRoutes,
} from './access-control.js';
export { Governance, type GovernanceOptions, SESSION_COOKIE, TOKEN_PREFIX } from './governance.js';
export { governanceRoutes } from './governance-routes.js';
export type { Principal } from './principal.js';
export {
  isRole,
  PERMISSIONS,
  type Permission,
  permissionsOf,
  ROLES,
  type Role,
  readsMasked,
} from './roles.js';
export { ROUTE_RULES, type RouteRule, renderRulesTable, ruleFor } from './route-rules.js';
