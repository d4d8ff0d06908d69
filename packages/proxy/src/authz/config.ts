/**
 * The decision service's configuration file (`lockstep authz-server --config <file>`; YAML, or JSON),
 * validated once at start-up and frozen. Every refusal names the file, the field and what to write
 * instead. Routes are read exactly as the sidecar reads them (../config.ts).
 *
 *   service: orders                              # joins as spiffe://<trustDomain>/svc/orders
 *   controlPlane: https://127.0.0.1:8443         # or its replicas: [https://cp-0:8443, https://cp-1:8443]
 *   trustDomain: shop.test
 *   listen: { host: 127.0.0.1, port: 9191 }      # HTTPS: nginx, Traefik, Envoy (HTTP), AuthZEN
 *   grpc: { host: 127.0.0.1, port: 9192 }        # optional: Envoy ext_authz over gRPC
 *   trustedProxies: [spiffe://shop.test/svc/edge]
 *   authzenCallers: []                           # optional; each also in trustedProxies
 *   xfccElements: refuse                         # optional: refuse (default) or last
 *   routes:
 *     GET /health: { public: true }
 *     GET /orders/:id: { action: orders:read }
 *   limits: { bodyBytes: 65536, headerBytes: 32768, evaluations: 64, grpcMessageBytes: 65536, grpcHeaders: 128 }
 *   stateDir: ./.lockstep/workloads/orders-authz # optional: the audit spool
 *
 *   const server = await createAuthzServer({ ...loadAuthzServerConfig('authz.yaml'), joinToken });
 */
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { parseSpiffeId, type RouteTable } from '@lockstep/guard';
import {
  controlPlaneUrls,
  integer,
  knownKeys,
  object,
  parseListen,
  parseRoutes,
  SERVICE,
  text,
  type Fail,
} from '../config.ts';

export interface AuthzServerLimits {
  readonly bodyBytes: number;
  readonly headerBytes: number;
  readonly evaluations: number;
  readonly grpcMessageBytes: number;
  readonly grpcHeaders: number;
}

/** What `createAuthzServer` takes, but the join token (from the environment, never a file). */
export interface AuthzServerConfig {
  readonly service: string;
  /** The control plane's URL, or its replicas' URLs: asked in turn. */
  readonly controlPlane: readonly string[];
  readonly trustDomain: string;
  readonly listen: { readonly host: string; readonly port: number };
  /** Absent: no gRPC listener. */
  readonly grpc?: { readonly host: string; readonly port: number };
  readonly trustedProxies: readonly string[];
  readonly authzenCallers: readonly string[];
  readonly xfccElements: 'refuse' | 'last';
  readonly routes: RouteTable;
  readonly limits: AuthzServerLimits;
  readonly stateDir?: string;
}

export class AuthzServerConfigError extends Error {
  readonly code = 'LOCKSTEP_AUTHZ_CONFIG_INVALID';
  override readonly name = 'AuthzServerConfigError';
}

const DEFAULT_LIMITS: AuthzServerLimits = {
  bodyBytes: 64 * 1024,
  headerBytes: 32 * 1024,
  evaluations: 64,
  grpcMessageBytes: 64 * 1024,
  grpcHeaders: 128,
};
const TOP_KEYS = [
  'service',
  'controlPlane',
  'trustDomain',
  'listen',
  'grpc',
  'trustedProxies',
  'authzenCallers',
  'xfccElements',
  'routes',
  'limits',
  'stateDir',
];

/** Reads and validates `file`; throws an AuthzServerConfigError naming the file, the field and the fix. */
export function loadAuthzServerConfig(file: string): AuthzServerConfig {
  let source: string;
  try {
    source = readFileSync(file, 'utf8');
  } catch (error) {
    throw new AuthzServerConfigError(`${file}: cannot be read (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  let document: unknown;
  try {
    document = parseYaml(source, { uniqueKeys: true });
  } catch (error) {
    throw new AuthzServerConfigError(`${file}: not YAML or JSON: ${(error as Error).message}`);
  }
  return parseAuthzServerConfig(document, file);
}

/** Validates a parsed configuration; `where` prefixes every message (the file name). */
export function parseAuthzServerConfig(input: unknown, where = 'authz-server config'): AuthzServerConfig {
  const fail: Fail = (field, problem) => {
    throw new AuthzServerConfigError(`${where}: ${field}: ${problem}`);
  };
  const top = object(input, 'the top level', 'service: orders, controlPlane: https://…, trustDomain: …', fail);
  knownKeys(top, TOP_KEYS, '', fail);
  const service = text(top.service, 'service', 'the name in spiffe://<td>/svc/<name>, e.g. service: orders', fail);
  if (!SERVICE.test(service)) fail('service', `${JSON.stringify(service)} must be lower-case letters, digits, . _ -`);
  const trustDomain = text(top.trustDomain, 'trustDomain', "the control plane's --trust-domain, e.g. shop.test", fail);
  const example = `[spiffe://${trustDomain}/svc/edge]`;
  const trustedProxies = spiffeIds(top.trustedProxies, 'trustedProxies', example, fail);
  if (trustedProxies.length === 0)
    fail('trustedProxies', `list the SPIFFE IDs of the proxies that may ask, e.g. trustedProxies: ${example}`);
  const authzenCallers = spiffeIds(top.authzenCallers ?? [], 'authzenCallers', example, fail);
  for (const id of authzenCallers)
    if (!trustedProxies.includes(id))
      fail('authzenCallers', `${id} is not in trustedProxies: add it there too, or remove it`);
  const xfccElements = top.xfccElements ?? 'refuse';
  if (xfccElements !== 'refuse' && xfccElements !== 'last')
    fail('xfccElements', `must be refuse (the default) or last; got ${JSON.stringify(xfccElements)}`);
  const config: AuthzServerConfig = {
    service,
    controlPlane: controlPlaneUrls(top.controlPlane, fail),
    trustDomain,
    listen: parseListen(top.listen, fail, 'listen', 9191),
    ...(top.grpc === undefined ? {} : { grpc: parseListen(top.grpc, fail, 'grpc', 9192) }),
    trustedProxies: Object.freeze(trustedProxies),
    authzenCallers: Object.freeze(authzenCallers),
    xfccElements: xfccElements as 'refuse' | 'last',
    routes: parseRoutes(top.routes, fail),
    limits: parseLimits(top.limits, fail),
    ...(top.stateDir === undefined ? {} : { stateDir: text(top.stateDir, 'stateDir', 'a directory path', fail) }),
  };
  return Object.freeze(config);
}

function spiffeIds(value: unknown, field: string, example: string, fail: Fail): string[] {
  if (!Array.isArray(value)) return fail(field, `must be a list of SPIFFE IDs, e.g. ${field}: ${example}`);
  return value.map((id: unknown, index) => {
    if (typeof id !== 'string' || parseSpiffeId(id) === null)
      fail(`${field}[${index}]`, `must be a SPIFFE ID, e.g. ${example.slice(1, -1)}; got ${JSON.stringify(id)}`);
    return id as string;
  });
}

function parseLimits(value: unknown, fail: Fail): AuthzServerLimits {
  if (value === undefined) return DEFAULT_LIMITS;
  const limits = object(value, 'limits', 'limits: { bodyBytes: 65536 }', fail);
  knownKeys(limits, Object.keys(DEFAULT_LIMITS), 'limits.', fail);
  const read = (key: keyof AuthzServerLimits, max: number) =>
    integer(limits[key], `limits.${key}`, [1, max], fail, DEFAULT_LIMITS[key]);
  return {
    bodyBytes: read('bodyBytes', 16 * 1024 * 1024),
    headerBytes: read('headerBytes', 1024 * 1024),
    evaluations: read('evaluations', 1024),
    grpcMessageBytes: read('grpcMessageBytes', 4 * 1024 * 1024),
    grpcHeaders: read('grpcHeaders', 4096),
  };
}
