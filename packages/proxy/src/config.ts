/**
 * The sidecar's configuration file (YAML, or JSON — YAML is a superset), validated once at start-up
 * and frozen. Every refusal names the field and what to write instead, so that an operator fixes the
 * file without reading this code:
 *
 *   service: orders
 *   controlPlane: https://127.0.0.1:8443     # or its replicas: [https://cp-0:8443, https://cp-1:8443]
 *   trustDomain: shop.test
 *   listen: { host: 127.0.0.1, port: 8444 }
 *   upstream: http://127.0.0.1:3000          # or unix:/run/orders.sock
 *   egress: { port: 15001, targets: { payments: https://127.0.0.1:8446 } }   # or socket: /run/orders/egress.sock
 *   routes:
 *     GET /health: { public: true }
 *     POST /orders: { action: orders:create, body: { type: object, required: [item], properties: … } }
 *   limits: { bodyBytes: 1048576, connectTimeoutMs: 2000, headersTimeoutMs: 15000, bodyTimeoutMs: 30000 }
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import ajvModule from 'ajv';
import formatsModule from 'ajv-formats';
import { parse as parseYaml } from 'yaml';
import type { RouteTable, TableRouteConfig } from '@lockstep/guard';

type BodySchema = NonNullable<TableRouteConfig['body']>;

/** Where the unmodified service listens: plain HTTP on loopback, or a Unix socket. */
export type UpstreamTarget = { readonly origin: string } | { readonly socketPath: string };

export interface SidecarLimits {
  /** Largest request body (the guard's limit, also the egress's). Default 1 MiB. */
  readonly bodyBytes: number;
  /** Largest request head (the guard's limit). Default 16 KiB. */
  readonly headerBytes: number;
  /** Connecting to the upstream (or an egress target). Default 2 s. */
  readonly connectTimeoutMs: number;
  /** From the request sent to the response's headers. Default 15 s. */
  readonly headersTimeoutMs: number;
  /** Longest silence between two chunks of the response's body. Default 30 s. */
  readonly bodyTimeoutMs: number;
}

export interface SidecarConfig {
  readonly service: string;
  /**
   * The control plane's URL, or its replicas' (a list, or comma-separated), asked in turn by the agent.
   * `parseSidecarConfig` gives the list (`controlPlaneUrls`).
   */
  readonly controlPlane: string | readonly string[];
  readonly trustDomain: string;
  readonly listen: { readonly host: string; readonly port: number };
  readonly upstream: UpstreamTarget;
  /**
   * Where the app's outbound calls come in — a loopback port, or a Unix socket (made 0600: only the
   * sidecar's user, so no other local user can borrow its identity) — and service name → its https
   * origin; the app names the service in `lockstep-target`. Null: no egress.
   */
  readonly egress: {
    readonly listen: { readonly port: number } | { readonly socketPath: string };
    readonly targets: Readonly<Record<string, string>>;
  } | null;
  readonly routes: RouteTable;
  readonly limits: SidecarLimits;
  /** Where the workload keeps its audit spool; default `<LOCKSTEP_HOME, else ./.lockstep>/workloads/<service>`. */
  readonly stateDir?: string;
}

export class SidecarConfigError extends Error {
  readonly code = 'LOCKSTEP_SIDECAR_CONFIG_INVALID';
  override readonly name = 'SidecarConfigError';
}

const DEFAULT_LIMITS: SidecarLimits = {
  bodyBytes: 1024 * 1024,
  headerBytes: 16 * 1024,
  connectTimeoutMs: 2_000,
  headersTimeoutMs: 15_000,
  bodyTimeoutMs: 30_000,
};
const TOP_KEYS = [
  'service',
  'controlPlane',
  'trustDomain',
  'listen',
  'upstream',
  'egress',
  'routes',
  'limits',
  'stateDir',
];
const ROUTE_KEYS = ['action', 'public', 'dryRun', 'body'];
const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);
export const SERVICE = /^[a-z0-9][a-z0-9._-]{0,62}$/;
const LOOPBACK = new Set(['127.0.0.1', '[::1]']);

/** Reads and validates `file`; throws a SidecarConfigError naming the file, the field and the fix. */
export function loadSidecarConfig(file: string): SidecarConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new SidecarConfigError(`${file}: cannot be read (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  let document: unknown;
  try {
    document = parseYaml(text, { uniqueKeys: true });
  } catch (error) {
    throw new SidecarConfigError(`${file}: not YAML or JSON: ${(error as Error).message}`);
  }
  return parseSidecarConfig(document, file);
}

/** Validates a parsed configuration; `where` prefixes every message (the file name). */
export function parseSidecarConfig(input: unknown, where = 'sidecar config'): SidecarConfig {
  const fail = (field: string, problem: string): never => {
    throw new SidecarConfigError(`${where}: ${field}: ${problem}`);
  };
  const top = object(input, 'the top level', 'service: orders, controlPlane: https://…, trustDomain: …', fail);
  knownKeys(top, TOP_KEYS, '', fail);
  const service = text(top.service, 'service', 'the name in spiffe://<td>/svc/<name>, e.g. service: orders', fail);
  if (!SERVICE.test(service)) fail('service', `${JSON.stringify(service)} must be lower-case letters, digits, . _ -`);
  const controlPlane = controlPlaneUrls(top.controlPlane, fail);
  const trustDomain = text(top.trustDomain, 'trustDomain', "the control plane's --trust-domain, e.g. shop.test", fail);
  const limits = parseLimits(top.limits, fail);
  const config: SidecarConfig = {
    service,
    controlPlane,
    trustDomain,
    listen: parseListen(top.listen, fail),
    upstream: parseUpstream(top.upstream, fail),
    egress: top.egress === undefined ? null : parseEgress(top.egress, fail),
    routes: parseRoutes(top.routes, fail),
    limits,
    ...(top.stateDir === undefined ? {} : { stateDir: text(top.stateDir, 'stateDir', 'a directory path', fail) }),
  };
  return Object.freeze(config);
}

/** Throws the config's error for `field`; the readers below are shared with authz/config.ts. */
export type Fail = (field: string, problem: string) => never;

export function object(value: unknown, field: string, example: string, fail: Fail): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    fail(field, `must be a mapping, e.g. ${example}`);
  return value as Record<string, unknown>;
}

export function knownKeys(value: Record<string, unknown>, known: readonly string[], prefix: string, fail: Fail): void {
  for (const key of Object.keys(value)) {
    if (!known.includes(key)) fail(`${prefix}${key}`, `unknown field; the fields are ${known.join(', ')}`);
  }
}

export function text(value: unknown, field: string, example: string, fail: Fail): string {
  if (typeof value !== 'string' || value === '') fail(field, `required: ${example}`);
  return value as string;
}

export function integer(
  value: unknown,
  field: string,
  [min, max]: [number, number],
  fail: Fail,
  fallback?: number,
): number {
  if (value === undefined && fallback !== undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    fail(field, `must be a whole number from ${min} to ${max}; got ${JSON.stringify(value)}`);
  }
  return value as number;
}

export function httpsUrl(value: unknown, field: string, example: string, fail: Fail): string {
  const url = URL.parse(text(value, field, example, fail));
  if (url?.protocol !== 'https:' || url.pathname !== '/' || url.search !== '' || url.username !== '') {
    fail(field, `must be an https origin, ${example}; got ${JSON.stringify(value)}`);
  }
  return (url as URL).origin;
}

/**
 * `controlPlane`: its https origin, or those of its replicas — a list, or comma-separated — which the
 * workload agent asks in turn. At least one; each checked as one origin is; duplicates dropped; frozen.
 */
export function controlPlaneUrls(value: unknown, fail: Fail): readonly string[] {
  const example =
    'e.g. controlPlane: https://127.0.0.1:8443, or for replicas controlPlane: [https://cp-0:8443, https://cp-1:8443]';
  let items: [unknown, string][];
  if (Array.isArray(value)) items = value.map((item: unknown, index) => [item, `controlPlane[${index}]`]);
  else if (typeof value === 'string' && value.includes(','))
    items = value
      .split(',')
      .map((part) => part.trim())
      .filter((part) => part !== '')
      .map((part) => [part, 'controlPlane']);
  else items = [[value, 'controlPlane']];
  if (items.length === 0) fail('controlPlane', `list at least one URL, ${example}`);
  const origins = items.map(([item, field]) => httpsUrl(item, field, example, fail));
  return Object.freeze([...new Set(origins)]);
}

/** `{ host, port }` (host default 127.0.0.1) under `field`, e.g. `listen: { host: 127.0.0.1, port: 8444 }`. */
export function parseListen(value: unknown, fail: Fail, field = 'listen', port = 8444): SidecarConfig['listen'] {
  const listen = object(value, field, `${field}: { host: 127.0.0.1, port: ${port} }`, fail);
  knownKeys(listen, ['host', 'port'], `${field}.`, fail);
  const host = listen.host === undefined ? '127.0.0.1' : text(listen.host, `${field}.host`, 'e.g. 0.0.0.0', fail);
  if (isIP(host) === 0 && host !== 'localhost')
    fail(`${field}.host`, `must be an IP address, e.g. 0.0.0.0; got ${host}`);
  return { host, port: integer(listen.port, `${field}.port`, [0, 65_535], fail) };
}

/**
 * `unix:<path>` or `http://127.0.0.1:<port>`: the upstream gets identity headers in the clear, so loopback
 * only. A Unix socket is preferred (the sidecar warns about a port): any local user can call a loopback
 * port with forged `x-lockstep-*` headers, or bind it while the app is down and receive verified Txn-Tokens.
 */
function parseUpstream(value: unknown, fail: Fail): UpstreamTarget {
  const example = 'upstream: http://127.0.0.1:3000 (or unix:/run/orders.sock)';
  const raw = text(value, 'upstream', example, fail);
  if (raw.startsWith('unix:')) {
    const socketPath = raw.slice('unix:'.length);
    if (!socketPath.startsWith('/'))
      fail('upstream', `a Unix socket needs an absolute path, e.g. unix:/run/orders.sock`);
    return { socketPath };
  }
  const url = URL.parse(raw);
  if (url?.protocol !== 'http:' || url.pathname !== '/' || url.search !== '' || url.port === '') {
    fail('upstream', `must be ${example}; got ${JSON.stringify(raw)}`);
  }
  if ((url as URL).hostname === 'localhost')
    fail(
      'upstream',
      'write 127.0.0.1 or [::1], not localhost: it may resolve to either, where another user could listen',
    );
  if (!LOOPBACK.has((url as URL).hostname)) {
    fail(
      'upstream',
      `must be on loopback (127.0.0.1 or [::1]), or unix:/path: the upstream is sent identity headers in plain HTTP`,
    );
  }
  return { origin: (url as URL).origin };
}

function parseEgress(value: unknown, fail: Fail): NonNullable<SidecarConfig['egress']> {
  const egress = object(value, 'egress', 'egress: { port: 15001, targets: { payments: https://payments:8443 } }', fail);
  knownKeys(egress, ['port', 'socket', 'targets'], 'egress.', fail);
  if ((egress.port === undefined) === (egress.socket === undefined))
    fail('egress', 'give either port (a loopback port, e.g. 15001) or socket (e.g. /run/orders/egress.sock), not both');
  let listen: NonNullable<SidecarConfig['egress']>['listen'];
  if (egress.socket === undefined) listen = { port: integer(egress.port, 'egress.port', [0, 65_535], fail) };
  else {
    const socketPath = text(egress.socket, 'egress.socket', 'an absolute path, e.g. /run/orders/egress.sock', fail);
    if (!socketPath.startsWith('/')) fail('egress.socket', 'must be an absolute path, e.g. /run/orders/egress.sock');
    listen = { socketPath };
  }
  const targets = object(egress.targets ?? {}, 'egress.targets', 'targets: { payments: https://payments:8443 }', fail);
  const parsed: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const [name, origin] of Object.entries(targets)) {
    if (!SERVICE.test(name)) fail(`egress.targets.${name}`, 'a service name: lower-case letters, digits, . _ -');
    parsed[name] = httpsUrl(origin, `egress.targets.${name}`, `e.g. ${name}: https://${name}:8443`, fail);
  }
  return { listen, targets: Object.freeze(parsed) };
}

function parseLimits(value: unknown, fail: Fail): SidecarLimits {
  if (value === undefined) return DEFAULT_LIMITS;
  const limits = object(value, 'limits', 'limits: { bodyBytes: 1048576 }', fail);
  knownKeys(limits, Object.keys(DEFAULT_LIMITS), 'limits.', fail);
  const read = (key: keyof SidecarLimits, max: number) =>
    integer(limits[key], `limits.${key}`, [1, max], fail, DEFAULT_LIMITS[key]);
  return {
    bodyBytes: read('bodyBytes', 64 * 1024 * 1024),
    headerBytes: read('headerBytes', 1024 * 1024),
    connectTimeoutMs: read('connectTimeoutMs', 60_000),
    headersTimeoutMs: read('headersTimeoutMs', 600_000),
    bodyTimeoutMs: read('bodyTimeoutMs', 600_000),
  };
}

export function parseRoutes(value: unknown, fail: Fail): RouteTable {
  const example = "routes: { 'GET /orders/:id': { action: orders:read }, 'GET /health': { public: true } }";
  const routes = object(value, 'routes', example, fail);
  if (Object.keys(routes).length === 0) fail('routes', `declare at least one route, e.g. ${example}`);
  // Bodies are checked as sent: no coercion, no defaults filled in, unknown fields refused where the schema says so.
  const ajv = new ajvModule.default({ strict: true, strictNumbers: true, allErrors: false, coerceTypes: false });
  formatsModule.default(ajv);
  const table: RouteTable = {};
  for (const [key, entry] of Object.entries(routes)) {
    const field = `routes["${key}"]`;
    const match = /^([A-Z]+) (\/\S*)$/.exec(key);
    if (!match || !METHODS.has(match[1] as string))
      fail(field, 'the key must be "<METHOD> /path", e.g. "GET /orders/:id"');
    const route = object(entry ?? {}, field, '{ action: orders:read } ({} for the default action)', fail);
    knownKeys(route, ROUTE_KEYS, `${field}.`, fail);
    for (const flag of ['public', 'dryRun'] as const) {
      if (route[flag] !== undefined && typeof route[flag] !== 'boolean')
        fail(`${field}.${flag}`, 'must be true or false');
    }
    if (route.action !== undefined) text(route.action, `${field}.action`, 'a Cedar action id, e.g. orders:read', fail);
    const config: TableRouteConfig = {
      ...(route.action === undefined ? {} : { action: route.action as string }),
      ...(route.public === undefined ? {} : { public: route.public as boolean }),
      ...(route.dryRun === undefined ? {} : { dryRun: route.dryRun as boolean }),
      ...(route.body === undefined ? {} : { body: compileBodySchema(ajv, route.body, `${field}.body`, fail) }),
    };
    table[key] = config;
  }
  return table;
}

/** A JSON Schema as the guard's `safeParse` shape: the body is passed on as sent, never changed. */
function compileBodySchema(ajv: InstanceType<typeof ajvModule.default>, schema: unknown, field: string, fail: Fail) {
  object(schema, field, '{ type: object, required: [item], properties: { item: { type: string } } }', fail);
  let validate: ReturnType<typeof ajv.compile>;
  try {
    validate = ajv.compile(schema as object);
  } catch (error) {
    return fail(field, `not a valid JSON Schema: ${(error as Error).message}`);
  }
  const body: BodySchema = {
    safeParse(value: unknown) {
      if (validate(value)) return { success: true, data: value };
      const issue = validate.errors?.[0];
      const path = (issue?.instancePath ?? '').split('/').slice(1);
      return { success: false, error: { issues: [{ path, message: issue?.message ?? 'does not match the schema' }] } };
    },
  };
  return body;
}
