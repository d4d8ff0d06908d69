/**
 * The service registry. Guards report over mTLS what they enforce; the identity is the SVID's, never
 * the body's. Administrators (the scanner reads it with their credentials) and Lockstep's own components (`spiffe://<td>/lockstep/…`)
 * read the list.
 *
 *   POST /v1/registry/heartbeat   { routes, policyVersion, svidExpiresAt, mode, guardVersion, endpoints? } → 204
 *
 * `endpoints` are where the guard listens (`host:port`, or `*:port` when bound to every address).
 * Only the ports are taken: each is recorded at the address the heartbeat came from. A workload
 * can only register itself — never point the scanner, which sends only to registered addresses,
 * at another host.
 *   GET  /v1/services             → { services: [... , stale] }
 */
import type { FastifyInstance } from 'fastify';
import type { WorkloadCa } from '../ca/workload-ca.ts';
import { ControlPlaneError } from '../errors.ts';
import type { ControlPlaneStore, RegisteredRoute } from '../store/store.ts';
import { admittedCaller, admittedWorkload, requireCaller } from './peer.ts';

/** A guard that has not reported for this long is shown as stale. */
export const STALE_AFTER_MS = 60_000;

interface Heartbeat {
  routes: RegisteredRoute[];
  policyVersion: string | null;
  svidExpiresAt: string;
  mode: 'enforce' | 'dry-run';
  guardVersion: string;
  endpoints?: string[];
}

const ROUTE = {
  type: 'object', additionalProperties: false, required: ['method', 'template', 'action', 'public', 'dryRun'],
  properties: {
    method: { type: 'string', maxLength: 16 }, template: { type: 'string', maxLength: 512 }, action: { type: 'string', maxLength: 200 }, public: { type: 'boolean' }, dryRun: { type: 'boolean' },
    owner: { type: 'boolean' }, validatesBody: { type: 'boolean' },
  },
} as const;

/** The heartbeat's source address as `host` of a `host:port` (IPv4-mapped IPv6 unwrapped, IPv6 bracketed). */
function peerAddress(address: string | undefined): string {
  const plain = (address ?? '127.0.0.1').replace(/^::ffff:(\d+\.\d+\.\d+\.\d+)$/, '$1');
  return plain.includes(':') ? `[${plain}]` : plain;
}

export function registerRegistryRoutes(app: FastifyInstance, ca: WorkloadCa, store: ControlPlaneStore): void {
  app.post<{ Body: Heartbeat }>('/v1/registry/heartbeat', {
    schema: {
      body: {
        type: 'object', additionalProperties: false, required: ['routes', 'policyVersion', 'svidExpiresAt', 'mode', 'guardVersion'],
        properties: {
          routes: { type: 'array', maxItems: 2_000, items: ROUTE },
          policyVersion: { anyOf: [{ type: 'string', maxLength: 128 }, { type: 'null' }] },
          svidExpiresAt: { type: 'string', format: 'date-time', maxLength: 40 },
          mode: { enum: ['enforce', 'dry-run'] },
          guardVersion: { type: 'string', maxLength: 64 },
          endpoints: { type: 'array', maxItems: 16, items: { type: 'string', maxLength: 270, pattern: '^(\\*|[A-Za-z0-9.-]+|\\[[0-9a-fA-F:.]+\\]):[0-9]{1,5}$' } },
        },
      },
    },
    onRequest: requireCaller(ca.trustDomain, ['workload']),
  }, async (request, reply) => {
    const spiffeId = admittedCaller(request);
    const svidExpiresAt = Date.parse(request.body.svidExpiresAt);
    if (!Number.isFinite(svidExpiresAt)) throw new ControlPlaneError('LOCKSTEP_CP_REQUEST_INVALID', 'svidExpiresAt is not a date');
    await store.recordHeartbeat({
      spiffeId, service: admittedWorkload(request), routes: request.body.routes, policyVersion: request.body.policyVersion,
      svidExpiresAt, mode: request.body.mode, guardVersion: request.body.guardVersion, lastSeen: Date.now(),
      endpoints: [...new Set((request.body.endpoints ?? []).map((endpoint) => `${peerAddress(request.raw.socket.remoteAddress)}${endpoint.slice(endpoint.lastIndexOf(':'))}`))],
    });
    return reply.code(204).send();
  });

  app.get('/v1/services', {
    onRequest: requireCaller(ca.trustDomain, ['admin', 'lockstep'], 'LOCKSTEP_CP_ADMIN_REQUIRED'),
  }, async () => {
    const now = Date.now();
    return { services: (await store.services()).map((entry) => ({ ...entry, stale: now - entry.lastSeen > STALE_AFTER_MS })) };
  });
}
