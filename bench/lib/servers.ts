/**
 * The three servers under test, each started in its own process (bench/server.ts), all Fastify over HTTPS
 * with mTLS on 127.0.0.1 and the same route and handler:
 *
 *   bare     no guard; TLS itself requires and verifies the client certificate.
 *   guarded  createGuard + register(lockstep, { guard }), exactly as a user would, audit to a file.
 *   guarded-no-sink  the same with no audit subscriber: what enforcement costs without the audit I/O.
 *   naive    bare + an onRequest hook that verifies the Txn-Token (jose jwtVerify) and asks Cedar
 *            (statefulIsAuthorized) on every request: no token cache, no decision cache.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import * as cedar from '@cedar-policy/cedar-wasm/nodejs';
import Fastify, { type FastifyInstance, type FastifyRequest, type RouteShorthandOptions } from 'fastify';
import { importJWK, jwtVerify, type JWK } from 'jose';
import { createGuard, type Guard, type GuardLogger } from '@lockstep/guard';
import { lockstep } from '@lockstep/guard/fastify';
import type { JWK as JoseJwk } from 'jose';
import type { PolicySet } from '@lockstep/policy';
import { SERVICE, TRUST_DOMAIN, type BenchWorld } from './world.ts';

export type Variant = 'bare' | 'guarded' | 'guarded-no-sink' | 'naive' | 'guarded-other-writer';
export const VARIANTS: readonly Variant[] = ['bare', 'guarded', 'guarded-no-sink', 'naive'];
/**
 * Only when BENCH_VARIANTS names it: `guarded` with the other audit writer (`thread` when `guarded`
 * runs the default `inline`), to compare the two in the same rounds.
 */
export const OPTIONAL_VARIANTS: readonly Variant[] = ['guarded-other-writer'];
export const ROUTE_PATH = '/orders/:id';

/** What a server process needs of the world: plain data, sent over IPC. */
export interface ServerWorld {
  readonly caPem: string;
  readonly orders: { readonly chainPem: string; readonly keyPem: string };
  readonly txnTokenJwks: { keys: JoseJwk[] };
  readonly policySet: PolicySet;
  readonly policyJwks: { keys: JoseJwk[] };
  readonly bundle: string;
}

export function serverWorld(world: BenchWorld): ServerWorld {
  return {
    caPem: world.caPem,
    orders: { chainPem: world.orders.chainPem, keyPem: world.orders.keyPem },
    txnTokenJwks: { keys: [...world.minter.jwks.keys] },
    policySet: world.policySet,
    policyJwks: world.policyJwks,
    bundle: world.bundle,
  };
}

export interface RunningServer {
  readonly origin: string;
  /** Requests the server has received so far. */
  requests(): number;
  /** Decision events the guard wrote to its audit file (guarded only; null otherwise). Read after close(). */
  auditLines(): number | null;
  close(): Promise<void>;
}

/** Warnings and errors only: a guard that complains during a benchmark should be seen. */
const benchLogger: GuardLogger = {
  info() {},
  warn: (message, fields) => console.error(`[guard warn] ${message}`, fields ?? ''),
  error: (message, fields) => console.error(`[guard error] ${message}`, fields ?? ''),
};

const routeOptions: RouteShorthandOptions = { config: { lockstep: { action: 'orders:read' } } };
async function showOrder(request: FastifyRequest): Promise<{ ok: true; id: string; item: string; quantity: number }> {
  return { ok: true, id: (request.params as { id: string }).id, item: 'book', quantity: 1 };
}

function mtlsOptions(world: ServerWorld) {
  return {
    cert: world.orders.chainPem,
    key: world.orders.keyPem,
    ca: world.caPem,
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.3' as const,
  };
}

async function listen(
  app: FastifyInstance,
  onClose: () => Promise<void> = async () => {},
  auditLines: () => number | null = () => null,
): Promise<RunningServer> {
  app.get(ROUTE_PATH, routeOptions, showOrder);
  let requests = 0;
  app.server.on('request', () => requests++);
  await app.listen({ host: '127.0.0.1', port: 0 });
  const { port } = app.server.address() as AddressInfo;
  return {
    origin: `https://127.0.0.1:${port}`,
    requests: () => requests,
    auditLines,
    async close() {
      await app.close();
      await onClose();
    },
  };
}

export function startVariant(variant: Variant, world: ServerWorld, auditFile: string): Promise<RunningServer> {
  switch (variant) {
    case 'bare':
      return startBare(world);
    case 'guarded':
      return startGuarded(world, auditFile);
    case 'guarded-no-sink':
      return startGuarded(world, null);
    case 'guarded-other-writer':
      return startGuarded(world, auditFile, auditWriter() === 'thread' ? 'inline' : 'thread');
    case 'naive':
      return startNaive(world);
  }
}

export async function startBare(world: ServerWorld): Promise<RunningServer> {
  return listen(Fastify({ https: mtlsOptions(world), logger: false }));
}

export async function startGuarded(
  world: ServerWorld,
  auditFile: string | null,
  writer: 'thread' | 'inline' = auditWriter(),
): Promise<RunningServer & { guard: Guard }> {
  const guard = await createGuard({
    service: SERVICE,
    trustDomain: TRUST_DOMAIN,
    trustBundle: world.caPem,
    svid: { cert: world.orders.chainPem, key: world.orders.keyPem },
    txnTokenKeys: { jwks: world.txnTokenJwks },
    policy: { keys: world.policyJwks, bundle: world.bundle },
    ...(auditFile === null ? {} : { audit: { file: auditFile, writer } }),
    logger: benchLogger,
  });
  const app = Fastify({ https: guard.tlsOptions(), logger: false });
  await app.register(lockstep, { guard });
  const server = await listen(
    app,
    () => guard.close(),
    () => (auditFile === null ? null : countLines(auditFile)),
  );
  return { ...server, guard };
}

/** BENCH_AUDIT_WRITER=thread measures the audit writer on a thread of its own instead of the request thread. */
export function auditWriter(): 'thread' | 'inline' {
  const writer = process.env.BENCH_AUDIT_WRITER ?? 'inline';
  if (writer !== 'thread' && writer !== 'inline')
    throw new TypeError(`BENCH_AUDIT_WRITER must be thread or inline, not ${JSON.stringify(writer)}`);
  return writer;
}

/** The lines of a file of any size (a run's audit file outgrows the longest string Node can hold). */
function countLines(path: string): number {
  const fd = openSync(path, 'r');
  try {
    const buffer = Buffer.allocUnsafe(1 << 20);
    let lines = 0;
    let last = 0x0a;
    for (let read = readSync(fd, buffer); read > 0; read = readSync(fd, buffer)) {
      for (let at = buffer.indexOf(0x0a); at >= 0 && at < read; at = buffer.indexOf(0x0a, at + 1)) lines += 1;
      last = buffer[read - 1] as number;
    }
    // A last line without its newline counts too.
    return last === 0x0a ? lines : lines + 1;
  } finally {
    closeSync(fd);
  }
}

export async function startNaive(world: ServerWorld): Promise<RunningServer> {
  const jwk = world.txnTokenJwks.keys[0] as JWK;
  const key = await importJWK(jwk, 'ES256');
  // Preparsing is what any sane caller does once; it is not a per-request cache.
  const preparsed = `bench-naive-${world.policySet.version}`;
  const schema = cedar.preparseSchema(preparsed, world.policySet.schemaText);
  if (schema.type === 'failure') throw new Error(`naive: Cedar rejected the schema: ${JSON.stringify(schema.errors)}`);
  const policies = cedar.preparsePolicySet(preparsed, { staticPolicies: { ...world.policySet.policies } });
  if (policies.type === 'failure')
    throw new Error(`naive: Cedar rejected the policies: ${JSON.stringify(policies.errors)}`);

  const app = Fastify({ https: mtlsOptions(world), logger: false });
  app.addHook('onRequest', async (request, reply) => {
    const header = request.headers['txn-token'];
    if (typeof header !== 'string') return reply.code(401).send({ error: 'txn-token missing' });
    let claims: Record<string, unknown>;
    try {
      ({ payload: claims } = await jwtVerify(header, key, {
        algorithms: ['ES256'],
        typ: 'txntoken+jwt',
        audience: TRUST_DOMAIN,
        requiredClaims: ['exp', 'iat', 'txn', 'sub'],
      }));
    } catch (error) {
      return reply.code(401).send({ error: (error as Error).message });
    }
    const san = (request.raw.socket as TLSSocket).getPeerCertificate(false).subjectaltname ?? '';
    const principal = /URI:(spiffe:\/\/[^,\s]+)/.exec(san)?.[1] ?? '';
    const tctx = (claims.tctx ?? {}) as { roles?: unknown; tenant?: unknown };
    const context = {
      sub: String(claims.sub ?? ''),
      roles: Array.isArray(tctx.roles) ? tctx.roles.filter((role): role is string => typeof role === 'string') : [],
      scope: typeof claims.scope === 'string' ? claims.scope.split(' ').filter(Boolean) : [],
      requester: typeof claims.req_wl === 'string' ? claims.req_wl : '',
      callerService: /\/svc\/([^/]+)$/.exec(principal)?.[1] ?? '',
      ...(typeof tctx.tenant === 'string' ? { tenant: tctx.tenant } : {}),
    };
    const answer = cedar.statefulIsAuthorized({
      principal: { type: 'Lockstep::Workload', id: principal },
      action: { type: 'Lockstep::Action', id: 'orders:read' },
      resource: { type: 'Lockstep::Service', id: SERVICE },
      context,
      entities: [],
      preparsedSchemaName: preparsed,
      preparsedPolicySetId: preparsed,
      validateRequest: true,
    });
    if (answer.type === 'failure' || answer.response.decision !== 'allow')
      return reply.code(403).send({ error: 'denied' });
    return undefined;
  });
  return listen(app);
}
