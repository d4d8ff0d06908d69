/**
 * The node:http adapter: wraps a plain request handler. Routes are matched with find-my-way (the
 * router Fastify uses); the handler receives the route's params and checked body.
 *
 *   const server = guard.createServer(lockstepHttp(guard, {
 *     'GET /orders/:id': { action: 'orders:read' },
 *   }, (req, res, { params }) => { … }));
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import findMyWay from 'find-my-way';
import type { Guard } from '../guard.ts';
import type { Admission } from '../pipeline.ts';
import { parseRouteTable, type RouteTable, type TableRoute } from '../route-table.ts';
import { guardInbound, runAdmitted } from './inbound.ts';

export interface GuardedRequestContext {
  params: Record<string, string | undefined>;
  body: unknown;
  admission: Admission;
}

export type GuardedHandler = (request: IncomingMessage, response: ServerResponse, context: GuardedRequestContext) => unknown;

export function lockstepHttp(guard: Guard, table: RouteTable, handler: GuardedHandler): (request: IncomingMessage, response: ServerResponse) => void {
  const routes = parseRouteTable(table, 'lockstepHttp');
  guard.declareRoutes(routes.map((route) => route.security));
  const router = findMyWay({ ignoreTrailingSlash: false, caseSensitive: true });
  for (const route of routes) {
    router.on(route.security.method as 'GET', route.security.template, () => {}, { route });
  }

  return function lockstepHandler(request, response) {
    const found = router.find(request.method as 'GET', request.url ?? '/');
    const route = (found?.store as { route?: TableRoute } | undefined)?.route ?? null;
    guardInbound(guard, request, response, route, found?.params ?? {}).then((admitted) => {
      if (admitted === null) return;
      return runAdmitted(admitted.admission, () => handler(request, response, { params: found?.params ?? {}, body: admitted.body, admission: admitted.admission }));
    }).catch((error: unknown) => {
      guard.options.logger.error('handler failed', { error: error instanceof Error ? error.stack : String(error) });
      if (!response.headersSent) {
        response.writeHead(500, { 'content-type': 'application/json' });
        response.end('{"error":"internal"}');
      } else {
        response.destroy();
      }
    });
  };
}

export default lockstepHttp;
