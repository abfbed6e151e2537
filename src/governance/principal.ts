import type { Permission, Role } from './roles.js';

/**
 * Who a request acts for, set on `request.principal` by the access layer
 * (`./access-control.ts`) before any handler runs; undefined on public routes.
 * - `user`: a person, by a console session (cookie)
 * - `token`: an API token, of a user (`userId`) or of a service
 * - `admin-token`: `TRIBUTARY_ADMIN_TOKEN` (the workspace's admin token), an owner
 * - `read-token`: `identity.readToken`, which may read profiles only
 */
export interface Principal {
  kind: 'user' | 'token' | 'admin-token' | 'read-token';
  /** User id, token id, or `admin-token` / `read-token`. */
  id: string;
  /** User name or token name, for the audit trail. */
  name: string;
  role: Role;
  /** Source ids or labels the principal is limited to; null: every source. */
  sources: string[] | null;
  /** Permissions a token is limited to within its role; null: all of the role's. */
  scopes: Permission[] | null;
  /** The user a session or a user's token acts for. */
  userId: string | null;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** Who the request acts for (see `Principal`); undefined on public routes. */
    principal?: Principal;
  }
}
