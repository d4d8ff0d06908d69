/**
 * The Express adapter. Express decides the route only inside its router, after app-level middleware
 * has run, so the guard is given the route table explicitly and matches it the way Express's router
 * does (the same path-to-regexp, the same case-sensitivity and strict-routing settings as the app):
 *
 *   app.use(lockstepExpress(guard, {
 *     'POST /orders': { action: 'orders:create', body: OrderSchema },
 *     'GET /health': { public: true },
 *   }));
 *
 * A request that matches no declared route is authenticated and refused (404), even if the app has a
 * handler for it: an undeclared route is never reachable. Mount the middleware first, on the app
 * root: mounted under a prefix (`app.use('/api', …)`) it would guard only that prefix, so it refuses
 * every request it sees (500) and logs how to mount it.
 *
 * The table decides a request before Express has chosen a route; express-dispatch.ts checks, when
 * Express dispatches, that the route it runs is the one decided (else refused, no handler runs).
 *
 * The table is matched by the guard itself, not by an `express.Router`: a router answers some
 * requests on its own (an OPTIONS request gets `200 Allow: …`, a bad escape in a param gets the
 * final handler's 400 page) without calling back, and such an answer would leave the server undecided
 * and unaudited.
 */
import { createRequire } from 'node:module';
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import type { Guard } from '../guard.ts';
import { parseRouteTable, type RouteTable, type TableRoute } from '../route-table.ts';
import { GuardError } from '../errors.ts';
import { createDispatchCheck, type ExpressRouter } from './express-dispatch.ts';
import { guardInbound, refuseUnadmitted, runAdmitted, writeRefusal } from './inbound.ts';

type Params = Record<string, string | undefined>;
type Match = (path: string) => false | { params: Partial<Record<string, string | string[]>> };
type MatchOptions = { sensitive: boolean; end: boolean; trailing: boolean; decode: (value: string) => string };
type PathToRegexp = { match(path: string, options: MatchOptions): Match };

// The path-to-regexp and parseurl that this Express's router uses, not copies that could drift from it.
const requireFromExpress = createRequire(createRequire(import.meta.url).resolve('express'));
const requireFromRouter = createRequire(requireFromExpress.resolve('router'));
const { match } = requireFromRouter('path-to-regexp') as PathToRegexp;
const parseUrl = requireFromExpress('parseurl') as (request: Request) => { pathname: string | null } | undefined;

interface ExpressRoute {
  readonly route: TableRoute;
  readonly match: Match;
}

/** How Express's router (router/lib/layer.js) builds a route's matcher, for the app's settings. */
function expressMatcher(template: string, caseSensitive: boolean, strict: boolean): Match {
  const path = strict || template === '/' ? template : template.replace(/\/+$/, '');
  return match(path, { sensitive: caseSensitive, end: true, trailing: !strict, decode: decodeURIComponent });
}

/**
 * The declared route for a request, or null. A HEAD request without a declared HEAD route is the GET
 * route's (RFC 9110 §9.3.2; Express serves it with the GET handler). A path whose escapes cannot be
 * decoded matches no route.
 */
type Found = { route: TableRoute; params: Params } | null;

function findRoute(routes: readonly ExpressRoute[], method: string, path: string): Found {
  const pick = (wanted: string) => {
    for (const candidate of routes) {
      if (candidate.route.security.method !== wanted) continue;
      const found = candidate.match(path);
      if (found !== false) return { route: candidate.route, params: flatParams(found.params) };
    }
    return null;
  };
  try {
    return pick(method) ?? (method === 'HEAD' ? pick('GET') : null);
  } catch {
    return null;
  }
}

/**
 * The app the server runs: a sub-app mounted with `app.use(path, subApp)` knows its parent. An app
 * mounted into its own descendant makes a cycle, which ends the climb.
 */
function rootOf(app: Request['app']): Request['app'] {
  type Mounted = Request['app'] & { parent?: Request['app'] };
  const seen = new Set<Mounted>();
  let root: Mounted = app;
  while (root.parent !== undefined && !seen.has(root.parent)) {
    seen.add(root);
    root = root.parent;
  }
  return root;
}

function flatParams(params: Partial<Record<string, string | string[]>>): Params {
  const flat: Params = {};
  for (const [name, value] of Object.entries(params)) flat[name] = Array.isArray(value) ? value.join('/') : value;
  return flat;
}

export function lockstepExpress(guard: Guard, table: RouteTable): RequestHandler {
  const parsed = parseRouteTable(table, 'lockstepExpress');
  guard.declareRoutes(parsed.map((route) => route.security));
  let routes: ExpressRoute[] | null = null;
  let appRouter: ExpressRouter | undefined;
  const dispatch = createDispatchCheck(guard, () => appRouter);
  let mountDetail: string | null = null;

  function routesFor(request: Request): ExpressRoute[] {
    if (routes !== null) return routes;
    appRouter = (request.app as { router?: ExpressRouter }).router;
    const caseSensitive = Boolean(request.app.get('case sensitive routing'));
    const strict = Boolean(request.app.get('strict routing'));
    routes = parsed.map((route) => ({ route, match: expressMatcher(route.security.template, caseSensitive, strict) }));
    warnUnlessFirst(request);
    return routes;
  }

  function warnUnlessFirst(request: Request): void {
    const stack = (request.app as { router?: { stack?: Array<{ handle?: unknown }> } }).router?.stack;
    if (stack !== undefined && stack[0]?.handle !== lockstepMiddleware) {
      guard.options.logger.error(
        'lockstepExpress is not the first middleware of the app: whatever runs before it can ' +
          'answer requests the guard never decided. Mount it first: app.use(lockstepExpress(guard, routes)).',
        { service: guard.service },
      );
    }
  }

  /**
   * Mounted under a prefix, the guard sees only requests under it (and its table lacks the prefix).
   * It refuses to serve rather than guard part of the app silently: from the first request it sees,
   * a refusing layer goes first in the app's router, so that every request of the app is refused.
   */
  function refuseMounted(request: Request, response: Response): void {
    const fix = 'mount on the app root: app.use(lockstepExpress(guard, routes))';
    const detail =
      `lockstepExpress is mounted under ${JSON.stringify(request.baseUrl)}: it would guard only that ` +
      `prefix and leave every other route of the app open; ${fix}`;
    if (mountDetail === null) {
      mountDetail = detail;
      guard.options.logger.error(`${detail}. Until then every request is refused.`, { service: guard.service });
      refuseEverythingFirst(request.app);
    }
    refuseAsMisMounted(request, response);
  }

  function refuseAsMisMounted(request: Request, response: Response): void {
    const error = new GuardError('LOCKSTEP_ERR_INTERNAL', mountDetail ?? 'lockstepExpress is mounted under a prefix');
    const admission = guard.pipeline.refuseEarly(request, null, error);
    writeRefusal(request, response, admission.refusal as GuardError, admission.requestId);
  }

  function refuseEverythingFirst(app: Request['app']): void {
    const root = rootOf(app);
    const stack = (root as { router?: { stack?: unknown[] } }).router?.stack;
    if (!Array.isArray(stack)) return;
    root.use(function lockstepMisMounted(request: Request, response: Response) {
      refuseAsMisMounted(request, response);
    });
    stack.unshift(stack.pop());
  }

  function lockstepMiddleware(request: Request, response: Response, next: NextFunction): void {
    if (request.baseUrl !== '') return refuseMounted(request, response);
    const found = findRoute(routesFor(request), request.method, parseUrl(request)?.pathname ?? '');
    const params = found?.params ?? {};
    guardInbound(guard, request, response, found?.route ?? null, params).then(
      (admitted) => {
        if (admitted === null) return;
        if (found?.route.body !== undefined) request.body = admitted.body;
        dispatch.watch(request, response, admitted.admission, params);
        runAdmitted(admitted.admission, () => next());
      },
      (error: unknown) => refuseUnadmitted(guard, request, response, error),
    );
  }
  return lockstepMiddleware;
}

export default lockstepExpress;
