/**
 * How a route is secured. Every route has an action — explicit (`action: 'orders:create'`) or the
 * default `"<METHOD> <route template>"` — and is enforced unless declared `public: true`. Public
 * routes are listed at start-up so that nobody is surprised by one.
 */
import { GuardConfigError } from './errors.ts';

export interface RouteConfig {
  /** The Cedar action id this route performs. Default: `"<METHOD> <template>"`, e.g. `"GET /orders/:id"`. */
  action?: string;
  /** No mTLS, Txn-Token or policy check (health, metrics). Audited as `LOCKSTEP_ALLOW_PUBLIC`. */
  public?: boolean;
  /** Log would-be denials of this route and let them through. Unsafe: for roll-outs only. */
  dryRun?: boolean;
  /**
   * Object-level authorization: who owns the object this request addresses, from the route's params
   * (e.g. the `sub` that placed order `:id`); null when there is no such object. Called only after the
   * caller and its Txn-Token are verified; the answer is the policy's `context.owner` ("" for null).
   */
  owner?: OwnerLookup;
  /**
   * Fastify only: let the body's schema coerce types (`"1"` → 1), as Fastify does by default. Off: a
   * body is checked as sent. (Express and node:http: zod coerces only where the schema says so.)
   */
  coerceBody?: boolean;
}

export type OwnerLookup = (
  params: Readonly<Record<string, string | undefined>>,
) => string | null | Promise<string | null>;

export interface RouteSecurity {
  readonly method: string;
  readonly template: string;
  readonly action: string;
  readonly public: boolean;
  readonly dryRun: boolean;
  readonly owner: OwnerLookup | null;
  /** The route checks its body against a schema (reported to the registry; the scanner tests it). */
  readonly validatesBody: boolean;
}

const ACTION = /^[\x21-\x7e](?:[\x20-\x7e]{0,198}[\x21-\x7e])?$/;

export function defaultAction(method: string, template: string): string {
  return `${method.toUpperCase()} ${template}`;
}

export function routeSecurity(
  method: string,
  template: string,
  config: RouteConfig | undefined,
  where: string,
  validatesBody = false,
): RouteSecurity {
  if (config !== undefined && (typeof config !== 'object' || config === null)) {
    throw new GuardConfigError(`${where}: lockstep route config must be an object like { action: 'orders:create' }`);
  }
  const known = new Set(['action', 'public', 'dryRun', 'owner', 'coerceBody']);
  for (const key of Object.keys(config ?? {})) {
    if (!known.has(key)) {
      const options = 'action, public, dryRun, owner or coerceBody';
      throw new GuardConfigError(`${where}: unknown lockstep route option "${key}"; use ${options}`);
    }
  }
  if (config?.owner !== undefined && typeof config.owner !== 'function')
    throw new GuardConfigError(
      `${where}: owner must be a function (params) => owner or null, e.g. ({ id }) => orders.get(id)?.customer ?? null`,
    );
  if (config?.owner !== undefined && config.public === true)
    throw new GuardConfigError(
      `${where}: a public route has no caller to check an owner against; drop owner or public`,
    );
  const action = config?.action ?? defaultAction(method, template);
  if (typeof action !== 'string' || !ACTION.test(action)) {
    throw new GuardConfigError(
      `${where}: action must be 1–200 printable characters, e.g. 'orders:create'; got ${JSON.stringify(action)}`,
    );
  }
  for (const flag of ['public', 'dryRun', 'coerceBody'] as const) {
    if (config?.[flag] !== undefined && typeof config[flag] !== 'boolean') {
      throw new GuardConfigError(`${where}: ${flag} must be true or false`);
    }
  }
  return Object.freeze({
    method: method.toUpperCase(),
    template,
    action,
    public: config?.public === true,
    dryRun: config?.dryRun === true,
    owner: config?.owner ?? null,
    validatesBody,
  });
}
