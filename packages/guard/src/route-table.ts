/**
 * The route table the Express and node:http adapters are given: `'METHOD /template'` → how that
 * route is secured, plus an optional body schema (zod). Fastify needs none: it knows its routes.
 */
import { GuardConfigError } from './errors.ts';
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
