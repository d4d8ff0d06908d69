/**
 * The route table the Express and node:http adapters are given: `'METHOD /template'` → how that
 * route is secured, plus an optional body schema (zod). Fastify needs none: it knows its routes.
 */
import findMyWay from 'find-my-way';
import { GuardConfigError } from './errors.ts';
import { ambiguousPath, targetOverride } from './request-target.ts';
import { routeSecurity, type RouteConfig, type RouteSecurity } from './routes.ts';
import type { BodySchema } from './steps/validate.ts';

export interface TableRouteConfig extends RouteConfig {
  /** Validates the JSON body (zod schema or any `safeParse`). Without it the body is not read. */
  body?: BodySchema;
}

export type RouteTable = Record<string, TableRouteConfig>;

export interface TableRoute {
  readonly security: RouteSecurity;
  readonly body: BodySchema | undefined;
}

const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

export function parseRouteTable(table: RouteTable, adapter: string): TableRoute[] {
  if (typeof table !== 'object' || table === null) {
    throw new GuardConfigError(
      `${adapter}: routes must be an object like { 'POST /orders': { action: 'orders:create', body: OrderSchema }, 'GET /health': { public: true } }`,
    );
  }
  return Object.entries(table).map(([key, config]) => {
    const match = /^([A-Z]+) (\/\S*)$/.exec(key);
    if (!match || !METHODS.has(match[1] as string)) {
      throw new GuardConfigError(
        `${adapter}: route key ${JSON.stringify(key)} must be "<METHOD> /path", e.g. "GET /orders/:id"`,
      );
    }
    if (config === null || typeof config !== 'object' || Array.isArray(config)) {
      throw new GuardConfigError(
        `${adapter}: ${key}: route config must be an object like { action: 'orders:create' } (use {} for the default action)`,
      );
    }
    const { body, ...routeConfig } = config;
    if (routeConfig.coerceBody !== undefined) {
      const hint = 'with zod, coerce in the schema (z.coerce.number())';
      throw new GuardConfigError(`${adapter}: ${key}: coerceBody is for Fastify routes; ${hint}`);
    }
    if (body !== undefined && typeof body?.safeParse !== 'function') {
      throw new GuardConfigError(`${adapter}: ${key}: body must be a zod schema (anything with safeParse)`);
    }
    return {
      security: routeSecurity(
        match[1] as string,
        match[2] as string,
        routeConfig,
        `${adapter}: ${key}`,
        body !== undefined,
      ),
      body,
    };
  });
}

export type FoundRoute = { readonly route: TableRoute; readonly params: Record<string, string | undefined> } | null;

export interface RouteMatcher {
  /** The declared route; a HEAD request without a declared HEAD route is the GET route's (RFC 9110 §9.3.2). */
  find(method: string, target: string): FoundRoute;
  /**
   * For a guard in front of another server (the sidecar, the decision service): why `target` could be
   * another route to that server than the one the guard would decide for, or null. First
   * `ambiguousPath` (dot segments, encoded separators, `;`, `//`); then letter case and a trailing
   * slash: the guard matches paths exactly, while Express, ASP.NET, Spring (by option) and IIS ignore
   * case and most frameworks a trailing slash — with a public `GET /:page` and an enforced `GET /admin`,
   * `/Admin` would be decided as the public page and served as the admin route; with a public `GET /*`,
   * so would `/admin/`. Last, a method or path named beside the request line (`targetOverride`:
   * `X-HTTP-Method-Override`, `_method`…). Such a request matches no route (404
   * LOCKSTEP_ERR_ROUTE_UNKNOWN after transport).
   */
  ambiguity(method: string, target: string, headers: Headers): string | null;
  /** `find` for a guard in front of another server: null when `ambiguity` has a reason. One exact lookup. */
  findForForeignServer(method: string, target: string, headers: Headers): FoundRoute;
}

type Headers = Readonly<Record<string, string | readonly string[] | undefined>>;

/** One router for the adapters that take a route table (node:http, the decision service, the sidecar). */
export function routeMatcher(routes: readonly TableRoute[]): RouteMatcher {
  const exact = findMyWay({ ignoreTrailingSlash: false, caseSensitive: true });
  for (const route of routes) exact.on(route.security.method as 'GET', route.security.template, () => {}, { route });
  // What a server that ignores letter case and trailing slashes would match: built on first use, so only
  // for a guard in front of another server.
  let lenient: typeof exact | null = null;
  const lenientRouter = () => {
    if (lenient !== null) return lenient;
    lenient = findMyWay({ ignoreTrailingSlash: true, caseSensitive: false });
    for (const route of routes) {
      try {
        lenient.on(route.security.method as 'GET', route.security.template, () => {}, { route });
      } catch {
        // `/a` and `/a/`, or `/A` and `/a`, are one route to a lenient server: the first declared stands for both.
      }
    }
    return lenient;
  };
  const lookup = (router: typeof exact, method: string, target: string): FoundRoute => {
    try {
      const found = router.find(method as 'GET', target) ?? (method === 'HEAD' ? router.find('GET', target) : null);
      const route = (found?.store as { route?: TableRoute } | undefined)?.route;
      return found && route ? { route, params: found.params } : null;
    } catch {
      return null; // a target the router cannot take matches no declared route
    }
  };
  /** The route as matched exactly, and why another server could serve another one (null if none could). */
  const decide = (method: string, target: string, headers: Headers): { found: FoundRoute; reason: string | null } => {
    const unsafe = ambiguousPath(target) ?? targetOverride(target, headers);
    if (unsafe !== null) return { found: null, reason: unsafe };
    const found = lookup(exact, method, target);
    const other = lookup(lenientRouter(), method, target)?.route;
    if (other === undefined || other === found?.route) return { found, reason: null };
    const { method: otherMethod, template } = other.security;
    const reason = `the path is "${otherMethod} ${template}" in another letter case or with a trailing slash; servers that ignore those would serve that route`;
    return { found: null, reason };
  };
  return {
    find: (method, target) => lookup(exact, method, target),
    findForForeignServer: (method, target, headers) => decide(method, target, headers).found,
    ambiguity: (method, target, headers) => decide(method, target, headers).reason,
  };
}
