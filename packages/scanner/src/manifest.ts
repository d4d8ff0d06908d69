/**
 * The scan manifest (YAML or JSON, parsed by the caller): test users, the objects they own (for the
 * object-level checks), accepted results, and services that are not in the registry.
 *
 *   users:
 *     a: { sub: alice, roles: [customer], tenant: demo }
 *     b: { sub: bob, roles: [customer], tenant: demo }
 *   objects:
 *     - { service: orders, route: "GET /orders/:id", params: { id: demo-alice }, owner: a }
 *   bodies:                         # a body each route admits: input checks vary one thing in it
 *     - { service: orders, route: "POST /orders", body: { item: tea, quantity: 1 } }
 *   accept:
 *     - { attack: authz.missing-role, service: inventory, route: "GET /items", reason: any signed-in user may browse }
 *   services:                       # not registered: e.g. a service without a guard
 *     - name: legacy
 *       endpoints: ["127.0.0.1:4200"]
 *       routes: [{ method: GET, template: /report }]
 */
import type { ScanUser } from '@lockstep/control-plane';
import type { ScanRoute } from './catalogue/attack.ts';

export interface ManifestObject {
  readonly service: string;
  readonly route: string;
  readonly params: Readonly<Record<string, string>>;
  readonly owner: 'a' | 'b';
}

/** A body that `route` (`POST /orders`) of `service` admits, as JSON text. */
export interface ManifestBody {
  readonly service: string;
  readonly route: string;
  readonly body: string;
}

export interface Acceptance {
  readonly attack: string;
  readonly service: string;
  readonly route?: string;
  readonly reason: string;
}

export interface ManifestService {
  readonly name: string;
  readonly endpoints: readonly string[];
  readonly routes: readonly ScanRoute[];
}

export interface ScanManifest {
  readonly users: { readonly a: ScanUser; readonly b: ScanUser };
  readonly objects: readonly ManifestObject[];
  readonly bodies: readonly ManifestBody[];
  readonly accept: readonly Acceptance[];
  readonly services: readonly ManifestService[];
}

export class ManifestError extends Error {
  override readonly name = 'ManifestError';
}

const DEFAULT_USERS = { a: { sub: 'lockstep-scan-a', roles: [] }, b: { sub: 'lockstep-scan-b', roles: [] } } as const;
const ENDPOINT = /^(?:[A-Za-z0-9.-]+|\[[0-9a-fA-F:.]+\]):\d{1,5}$/;
const ROUTE = /^[A-Z]+ \/\S*$/;
const MAX_BODY_BYTES = 64 * 1024;

export function parseManifest(value: unknown, where = 'scan manifest'): ScanManifest {
  if (value === undefined || value === null) {
    return { users: DEFAULT_USERS, objects: [], bodies: [], accept: [], services: [] };
  }
  const fail = (message: string): never => {
    throw new ManifestError(`${where}: ${message}`);
  };
  const record = (item: unknown, path: string): Record<string, unknown> =>
    typeof item === 'object' && item !== null && !Array.isArray(item)
      ? (item as Record<string, unknown>)
      : fail(`${path} must be a mapping`);
  const text = (item: unknown, path: string): string =>
    typeof item === 'string' && item.length > 0 && item.length <= 512
      ? item
      : fail(`${path} must be a non-empty string`);
  const list = (item: unknown, path: string): unknown[] =>
    item === undefined ? [] : Array.isArray(item) ? item : fail(`${path} must be a list`);
  const only = (item: Record<string, unknown>, keys: string[], path: string) => {
    for (const key of Object.keys(item))
      if (!keys.includes(key)) fail(`${path}: unknown key "${key}" (expected ${keys.join(', ')})`);
  };
  const top = record(value, 'the manifest');
  only(top, ['users', 'objects', 'bodies', 'accept', 'services'], 'the manifest');
  const user = (item: unknown, path: string): ScanUser => {
    const entry = record(item, path);
    only(entry, ['sub', 'roles', 'tenant'], path);
    const roles = list(entry.roles, `${path}.roles`).map((role, i) => text(role, `${path}.roles[${i}]`));
    return {
      sub: text(entry.sub, `${path}.sub`),
      roles,
      ...(entry.tenant === undefined ? {} : { tenant: text(entry.tenant, `${path}.tenant`) }),
    };
  };
  const users =
    top.users === undefined
      ? DEFAULT_USERS
      : (() => {
          const entry = record(top.users, 'users');
          only(entry, ['a', 'b'], 'users');
          const a = user(entry.a, 'users.a');
          const b = user(entry.b, 'users.b');
          if (a.sub === b.sub) fail('users.a and users.b must be two different subjects');
          return { a, b };
        })();
  const objects = list(top.objects, 'objects').map((item, i): ManifestObject => {
    const path = `objects[${i}]`;
    const entry = record(item, path);
    only(entry, ['service', 'route', 'params', 'owner'], path);
    const params = Object.fromEntries(
      Object.entries(record(entry.params ?? {}, `${path}.params`)).map(([key, param]) => [
        key,
        text(String(param), `${path}.params.${key}`),
      ]),
    );
    if (entry.owner !== 'a') fail(`${path}.owner must be a (the object-level check reads user a's object as user b)`);
    return {
      service: text(entry.service, `${path}.service`),
      route: text(entry.route, `${path}.route`),
      params,
      owner: 'a',
    };
  });
  const bodies = list(top.bodies, 'bodies').map((item, i): ManifestBody => {
    const path = `bodies[${i}]`;
    const entry = record(item, path);
    only(entry, ['service', 'route', 'body'], path);
    const route = text(entry.route, `${path}.route`);
    if (!ROUTE.test(route)) {
      fail(`${path}.route must be a method and a route template, e.g. "POST /orders"; got ${JSON.stringify(route)}`);
    }
    const body = JSON.stringify(record(entry.body, `${path}.body (a JSON object the route admits)`));
    if (Buffer.byteLength(body) > MAX_BODY_BYTES) {
      fail(`${path}.body is over ${MAX_BODY_BYTES} bytes: give a small body the route admits`);
    }
    return { service: text(entry.service, `${path}.service`), route, body };
  });
  const accept = list(top.accept, 'accept').map((item, i): Acceptance => {
    const path = `accept[${i}]`;
    const entry = record(item, path);
    only(entry, ['attack', 'service', 'route', 'reason'], path);
    return {
      attack: text(entry.attack, `${path}.attack`),
      service: text(entry.service, `${path}.service`),
      ...(entry.route === undefined ? {} : { route: text(entry.route, `${path}.route`) }),
      reason: text(entry.reason, `${path}.reason (say why this is acceptable)`),
    };
  });
  const services = list(top.services, 'services').map((item, i): ManifestService => {
    const path = `services[${i}]`;
    const entry = record(item, path);
    only(entry, ['name', 'endpoints', 'routes'], path);
    const endpoints = list(entry.endpoints, `${path}.endpoints`).map((endpoint, j) => {
      const written = text(endpoint, `${path}.endpoints[${j}]`);
      return ENDPOINT.test(written) ? written : fail(`${path}.endpoints[${j}] must be host:port, e.g. 127.0.0.1:4200`);
    });
    if (endpoints.length === 0) fail(`${path}.endpoints: name at least one host:port`);
    const routes = list(entry.routes, `${path}.routes`).map((route, j): ScanRoute => {
      const routePath = `${path}.routes[${j}]`;
      const fields = record(route, routePath);
      only(fields, ['method', 'template', 'action', 'public'], routePath);
      const method = text(fields.method, `${routePath}.method`).toUpperCase();
      const template = text(fields.template, `${routePath}.template`);
      return {
        method,
        template,
        action: fields.action === undefined ? `${method} ${template}` : text(fields.action, `${routePath}.action`),
        public: fields.public === true,
        owner: false,
        validatesBody: false,
      };
    });
    return { name: text(entry.name, `${path}.name`), endpoints, routes };
  });
  return { users, objects, bodies, accept, services };
}
