/**
 * Roles and what they may do. Each role holds the rights of the roles below it and adds its
 * own: viewer < analyst < engineer < admin < owner. docs/roles.md lists the rights route by
 * route (a test keeps it equal to `ROUTE_RULES`).
 */

export const ROLES = ['viewer', 'analyst', 'engineer', 'admin', 'owner'] as const;
export type Role = (typeof ROLES)[number];

/**
 * The rights a route may need. `authenticated` is any signed-in caller; `public` routes take
 * no credentials of this layer (the collection API checks write keys itself).
 */
export const PERMISSIONS = {
  /** Counts, health, the list of sources (the debugger's shapes without values). */
  'status:read': 'viewer',
  /** SQL on the warehouse (`/admin/v1/query`; personal data masked below admin). */
  'query:run': 'analyst',
  /** The Profile API's reads: profiles, search, explain, the match review list. */
  'profiles:read': 'analyst',
  /** Sources: check, discover, sync, import, runs. */
  'sources:operate': 'engineer',
  /** The failed-event store: list, show, retry. */
  'failed:manage': 'engineer',
  /** Tracking plans and transformation functions (configuration through the API). */
  'plans:write': 'engineer',
  /** Reads of the configuration through the API. */
  'config:read': 'engineer',
  /** Changes of configuration, destinations and their replays. */
  'config:write': 'admin',
  /** Identity changes: unmerge, probabilistic match runs and decisions. */
  'profiles:write': 'admin',
  /** Deletion and suppression of a person's data. */
  'privacy:delete': 'admin',
  /** The audit trail. */
  'audit:read': 'admin',
  /** Users, roles and every API token. */
  'users:manage': 'owner',
} as const satisfies Record<string, Role>;

export type Permission = keyof typeof PERMISSIONS;

/** What a route needs: a permission, any signed-in caller, or nothing of this layer. */
export type Requirement = Permission | 'authenticated' | 'public';

export function isRole(text: unknown): text is Role {
  return typeof text === 'string' && (ROLES as readonly string[]).includes(text);
}

export function isPermission(text: unknown): text is Permission {
  return typeof text === 'string' && Object.hasOwn(PERMISSIONS, text);
}

/** Whether `role` holds `other`'s rights (every role holds those below it). */
export function roleCovers(role: Role, other: Role): boolean {
  return ROLES.indexOf(role) >= ROLES.indexOf(other);
}

/** Whether `role` has `permission`. */
export function roleHas(role: Role, permission: Permission): boolean {
  return roleCovers(role, PERMISSIONS[permission]);
}

/** Every permission of `role`. */
export function permissionsOf(role: Role): Permission[] {
  return (Object.keys(PERMISSIONS) as Permission[]).filter((p) => roleHas(role, p));
}

/**
 * Whether a caller of this role reads personal data masked (SQL results, the Profile API):
 * every role below admin (viewers, analysts, engineers); admins and owners see it. No role (a
 * caller this layer did not authenticate): masked.
 */
export function readsMasked(role: Role | undefined): boolean {
  return role === undefined || ROLES.indexOf(role) < ROLES.indexOf('admin');
}
