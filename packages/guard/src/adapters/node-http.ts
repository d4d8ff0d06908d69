/**
 * The node:http adapter: wraps a plain request handler. Routes are matched with find-my-way (the
 * router Fastify uses); the handler receives the route's params and checked body, and should
 * dispatch on `admission.route`, not on the raw URL. A HEAD request is the GET route's unless a HEAD
 * route is declared. With `{ foreignServer: true }` (the handler hands the request to another server,
 * as the sidecar does), a target that server could read as another route (`foreignServerAmbiguity`:
 * dot segments, encoded separators, `;`, another letter case, a trailing slash, `X-HTTP-Method-Override`
 * or `_method`) matches no route: after
 * transport and the Txn-Token, 404 LOCKSTEP_ERR_ROUTE_UNKNOWN, audited. A handler that throws or rejects is answered 500 LOCKSTEP_ERR_INTERNAL and
 * audited (a second event for the request id): the guard writes no body of its own.
 *
 *   const server = guard.createServer(lockstepHttp(guard, {
 *     'GET /orders/:id': { action: 'orders:read' },
 *   }, (req, res, { params }) => { … }));
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Guard } from '../guard.ts';
import type { Admission } from '../pipeline.ts';
import { parseRouteTable, routeMatcher, type FoundRoute, type RouteTable } from '../route-table.ts';
import { guardInbound, refuseAdmitted, refuseUnadmitted, runAdmitted } from './inbound.ts';

export interface GuardedRequestContext {
  params: Record<string, string | undefined>;
  body: unknown;
  admission: Admission;
}

export type GuardedHandler = (
  request: IncomingMessage,
  response: ServerResponse,
  context: GuardedRequestContext,
) => unknown;

export interface LockstepHttpOptions {
  /** The handler passes requests to another server (a proxy): refuse targets it could read as another route. */
  readonly foreignServer?: boolean;
}

export function lockstepHttp(
  guard: Guard,
  table: RouteTable,
  handler: GuardedHandler,
  options: LockstepHttpOptions = {},
): (request: IncomingMessage, response: ServerResponse) => void {
  const routes = parseRouteTable(table, 'lockstepHttp');
  guard.declareRoutes(routes.map((route) => route.security));
  const matcher = routeMatcher(routes);
  const foreignServer = options.foreignServer === true;

  return function lockstepHandler(request, response) {
    const method = request.method ?? '';
    const url = request.url ?? '/';
    // A HEAD request without a declared HEAD route is the GET route's (RFC 9110 §9.3.2).
    const found: FoundRoute = foreignServer
      ? matcher.findForForeignServer(method, url, request.headers)
      : matcher.find(method, url);
    guardInbound(guard, request, response, found?.route ?? null, found?.params ?? {}).then(
      (admitted) => {
        if (admitted === null) return;
        const { admission, body } = admitted;
        // A failed handler is answered with a catalogue refusal and audited; the guard never writes a body of its own.
        const fail = (error: unknown) => refuseAdmitted(guard, request, response, admission, error);
        try {
          const context = { params: found?.params ?? {}, body, admission };
          const result = runAdmitted(admission, () => handler(request, response, context));
          if (result instanceof Promise) result.catch(fail);
        } catch (error) {
          fail(error);
        }
      },
      (error: unknown) => refuseUnadmitted(guard, request, response, error),
    );
  };
}

export default lockstepHttp;
