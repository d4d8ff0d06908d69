/**
 * The guard's steady-state cost per request, in process and without the network: `guard.pipeline.admit`
 * (transport identity from a cached connection, cached Txn-Token, cached decision, audit event) over
 * the same rotation of tokens the load generator sends, every token already seen once. Measured with
 * the audit file sink subscribed and with no audit subscriber, to show what auditing costs.
 * Less exposed to a noisy machine than the HTTP comparison: it is CPU time of the guard alone.
 */
import { X509Certificate } from 'node:crypto';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createGuard, type Guard, type GuardLogger, type GuardOptions } from '@lockstep/guard';
import type { InboundRequest } from '../../packages/guard/src/pipeline.ts';
import { routeSecurity, type RouteSecurity } from '../../packages/guard/src/routes.ts';
import { ROUTE_PATH } from './servers.ts';
import { SERVICE, TRUST_DOMAIN, type BenchWorld } from './world.ts';
import { auditWriter } from './servers.ts';

export interface AdmitCostReport {
  readonly auditedUs: number;
  readonly unauditedUs: number;
  readonly ops: number;
}

const quiet: GuardLogger = {
  info() {},
  warn() {},
  error: (message, fields) => console.error(`[guard error] ${message}`, fields ?? ''),
};

/**
 * A guard in this process for the bench's world, and what a verified TLS connection from the gateway
 * looks like to its transport step: `request(token)` is a steady-state request for the bench's route.
 */
export async function inProcessGuard(
  world: BenchWorld,
  extra: Pick<GuardOptions, 'audit' | 'cache'> = {},
): Promise<{ guard: Guard; request(token: string): InboundRequest; route: RouteSecurity }> {
  const guard: Guard = await createGuard({
    service: SERVICE,
    trustDomain: TRUST_DOMAIN,
    trustBundle: world.caPem,
    svid: { cert: world.orders.chainPem, key: world.orders.keyPem },
    txnTokenKeys: { jwks: world.minter.jwks },
    policy: { keys: world.policyJwks, bundle: world.bundle },
    ...extra,
    logger: quiet,
  });
  const raw = new X509Certificate(world.gateway.certPem).raw;
  const socket = { encrypted: true, authorized: true, getPeerCertificate: () => ({ raw }) } as unknown as Socket;
  return {
    guard,
    route: routeSecurity('GET', ROUTE_PATH, { action: 'orders:read' }, 'bench'),
    request: (token) => ({ socket, method: 'GET', headers: { 'txn-token': token }, rawHeaders: ['txn-token', token] }),
  };
}

async function measure(
  world: BenchWorld,
  tokens: readonly string[],
  passes: number,
  auditFile: string | null,
): Promise<number> {
  const { guard, request, route } = await inProcessGuard(
    world,
    auditFile === null ? {} : { audit: { file: auditFile, writer: auditWriter() } },
  );
  try {
    const requests = tokens.map(request);
    const admitAll = async () => {
      for (const each of requests) {
        const admission = await guard.pipeline.admit(each, route);
        if (!admission.allowed) throw new Error(`admit cost: the guard refused a bench request (${admission.reason})`);
      }
    };
    await admitAll(); // every token cold once, then JIT warm-up
    await admitAll();
    const started = performance.now();
    for (let pass = 0; pass < passes; pass++) await admitAll();
    return ((performance.now() - started) * 1000) / (passes * requests.length);
  } finally {
    await guard.close();
  }
}

export async function measureAdmitCost(
  world: BenchWorld,
  tokens: readonly string[],
  scratch: string,
  passes = 20,
): Promise<AdmitCostReport> {
  const auditedUs = await measure(world, tokens, passes, join(scratch, 'audit-admit-cost.jsonl'));
  const unauditedUs = await measure(world, tokens, passes, null);
  return { auditedUs, unauditedUs, ops: passes * tokens.length };
}
