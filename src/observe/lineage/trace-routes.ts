import type { FastifyInstance } from 'fastify';
import { type TraceDeps, traceMessage } from './trace.js';

/** `GET /admin/v1/trace/:messageId` (behind the admin token): one message's whole path, as JSON. */
export function traceAdminRoutes(admin: FastifyInstance, deps: TraceDeps): void {
  admin.get<{ Params: { messageId: string } }>('/admin/v1/trace/:messageId', async (req) =>
    traceMessage(deps, req.params.messageId),
  );
}
