/**
 * The Express adapter. Express decides the route only inside its router, after app-level middleware
 * has run, so the guard is given the route table explicitly and resolves it with Express's own
 * router (same path syntax, same case-sensitivity and strict-routing settings as the app):
 *
 *   app.use(lockstepExpress(guard, {
 *     'POST /orders': { action: 'orders:create', body: OrderSchema },
 *     'GET /health': { public: true },
 *   }));
 *
 * A request that matches no declared route is authenticated and refused (404), even if the app has a
 * handler for it: an undeclared route is never reachable. Mount the middleware first, on the app.
 */
import type { Request, RequestHandler, Response, NextFunction } from 'express';
import express from 'express';
import type { Guard } from '../guard.ts';
import { parseRouteTable, type RouteTable, type TableRoute } from '../route-table.ts';
import { guardInbound, runAdmitted } from './inbound.ts';

const kRoute = Symbol('lockstep.route');
const kParams = Symbol('lockstep.params');

export function lockstepExpress(guard: Guard, table: RouteTable): RequestHandler {
  const routes = parseRouteTable(table, 'lockstepExpress');
  guard.declareRoutes(routes.map((route) => route.security));
  let router: express.Router | null = null;

  function routerFor(request: Request): express.Router {
    if (router !== null) return router;
    router = express.Router({
      caseSensitive: Boolean(request.app.get('case sensitive routing')),
      strict: Boolean(request.app.get('strict routing')),
    });
    for (const route of routes) {
      const method = route.security.method.toLowerCase() as 'get';
      router[method](route.security.template, (req: Request, _res: Response, next: NextFunction) => {
        (req as Request & { [kRoute]?: TableRoute })[kRoute] = route;
        // Express restores req.params when the router is left: keep a copy for the owner lookup.
        (req as Request & { [kParams]?: Record<string, string> })[kParams] = { ...req.params } as Record<string, string>;
        next('router');
      });
    }
    return router;
  }

  return function lockstepMiddleware(request, response, next) {
    routerFor(request)(request, response, (error?: unknown) => {
      // The router ends with undefined, null or 'router'; only a real error is passed on.
      if (error !== undefined && error !== null && error !== 'router') return next(error);
      const route = (request as Request & { [kRoute]?: TableRoute })[kRoute] ?? null;
      guardInbound(guard, request, response, route, (request as Request & { [kParams]?: Record<string, string> })[kParams] ?? {}).then((admitted) => {
        if (admitted === null) return;
        if (route?.body !== undefined) request.body = admitted.body;
        runAdmitted(admitted.admission, () => next());
      }, next);
      return undefined;
    });
  };
}

export default lockstepExpress;
