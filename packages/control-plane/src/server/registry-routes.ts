/**
 * The service registry. Guards report over mTLS what they enforce; the identity is the SVID's, never
 * the body's. Administrators (the scanner reads it with their credentials) and Lockstep's own components (`spiffe://<td>/lockstep/…`)
 * read the list.
 *
 *   POST /v1/registry/heartbeat   { routes, policyVersion, svidExpiresAt, mode, guardVersion, endpoints?, unreachable? } → 204
 *
 * `endpoints` are where the guard listens (`host:port`, or `*:port` when bound to every address).
 * Only the ports are taken: each is recorded at the address the heartbeat came from. A workload
 * can only register itself — never point the scanner, which sends only to registered addresses,
 * at another host.
 * `unreachable: { since, until }` is the first report after the guard could not reach the control
 * plane: it is not stored, but handed to `onUnreachable` (the monitor's outage alert), the window
 * cut to the time since the guard's last report (the last 60 s for a guard without an entry) and
 * until now.
 *   POST /v1/registry/deregister  → 204: the guard stops cleanly; its entry is removed, so that its
 *                                  silence is no alarm, and the SVID it presents is retired: it can no
 *                                  longer recover after it expires (ca/recover.ts)
 *   GET  /v1/services             → { services: [... , stale] }
 */
import type { FastifyInstance } from 'fastify';
import type { TLSSocket } from 'node:tls';
import type { WorkloadCa } from '../ca/workload-ca.ts';
import { ControlPlaneError } from '../errors.ts';
import type { ControlPlaneStore, RegisteredRoute } from '../store/store.ts';
import { admittedCaller, admittedWorkload, peerSerial, requireCaller } from './peer.ts';

/** A guard that has not reported for this long is shown as stale. */
export const STALE_AFTER_MS = 60_000;

/** A guard's word that it could not reach the control plane from `since` until `until` (its clock, epoch ms). */
export interface UnreachableReport {
  readonly spiffeId: string;
  readonly service: string;
  readonly since: number;
  readonly until: number;
}

interface Heartbeat {
  routes: RegisteredRoute[];
  policyVersion: string | null;
  svidExpiresAt: string;
  mode: 'enforce' | 'dry-run';
  guardVersion: string;
  endpoints?: string[];
  unreachable?: { since: string; until: string };
}

const ROUTE = {
  type: 'object',
  additionalProperties: false,
  required: ['method', 'template', 'action', 'public', 'dryRun'],
  properties: {
    method: { type: 'string', maxLength: 16 },
    template: { type: 'string', maxLength: 512 },
    action: { type: 'string', maxLength: 200 },
    public: { type: 'boolean' },
    dryRun: { type: 'boolean' },
    owner: { type: 'boolean' },
    validatesBody: { type: 'boolean' },
  },
} as const;

/** The heartbeat's source address as `host` of a `host:port` (IPv4-mapped IPv6 unwrapped, IPv6 bracketed). */
function peerAddress(address: string | undefined): string {
  const plain = (address ?? '127.0.0.1').replace(/^::ffff:(\d+\.\d+\.\d+\.\d+)$/, '$1');
  return plain.includes(':') ? `[${plain}]` : plain;
}

export function registerRegistryRoutes(
  app: FastifyInstance,
  ca: WorkloadCa,
  store: ControlPlaneStore,
  onUnreachable: (report: UnreachableReport) => void,
): void {
  app.post<{ Body: Heartbeat }>(
    '/v1/registry/heartbeat',
    {
      schema: {
        body: {
          type: 'object',
          additionalProperties: false,
          required: ['routes', 'policyVersion', 'svidExpiresAt', 'mode', 'guardVersion'],
          properties: {
            routes: { type: 'array', maxItems: 2_000, items: ROUTE },
            policyVersion: { anyOf: [{ type: 'string', maxLength: 128 }, { type: 'null' }] },
            svidExpiresAt: { type: 'string', format: 'date-time', maxLength: 40 },
            mode: { enum: ['enforce', 'dry-run'] },
            guardVersion: { type: 'string', maxLength: 64 },
            endpoints: {
              type: 'array',
              maxItems: 16,
              items: {
                type: 'string',
                maxLength: 270,
                pattern: '^(\\*|[A-Za-z0-9.-]+|\\[[0-9a-fA-F:.]+\\]):[0-9]{1,5}$',
              },
            },
            unreachable: {
              type: 'object',
              additionalProperties: false,
              required: ['since', 'until'],
              properties: {
                since: { type: 'string', format: 'date-time', maxLength: 40 },
                until: { type: 'string', format: 'date-time', maxLength: 40 },
              },
            },
          },
        },
      },
      onRequest: requireCaller(ca.trustDomain, ['workload']),
    },
    async (request, reply) => {
      const spiffeId = admittedCaller(request);
      const service = admittedWorkload(request);
      const svidExpiresAt = Date.parse(request.body.svidExpiresAt);
      if (!Number.isFinite(svidExpiresAt))
        throw new ControlPlaneError('LOCKSTEP_CP_REQUEST_INVALID', 'svidExpiresAt is not a date');
      const outage = request.body.unreachable;
      let since = Date.parse(outage?.since ?? '');
      let until = Date.parse(outage?.until ?? '');
      if (outage !== undefined) {
        if (!(since <= until)) {
          throw new ControlPlaneError(
            'LOCKSTEP_CP_REQUEST_INVALID',
            'unreachable.since must be a date no later than unreachable.until',
          );
        }
        // A guard cannot have been cut off while its reports arrived: the window starts after its last
        // one (so that no workload can claim an outage of all time). One without an entry (never
        // registered, or deregistered, which any workload can do first) is believed for one silence.
        const now = Date.now();
        const lastSeen =
          (await store.services()).find((entry) => entry.spiffeId === spiffeId)?.lastSeen ?? now - STALE_AFTER_MS;
        since = Math.min(Math.max(since, lastSeen), now);
        until = Math.max(since, Math.min(until, now));
      }
      await store.recordHeartbeat({
        spiffeId,
        service,
        routes: request.body.routes,
        policyVersion: request.body.policyVersion,
        svidExpiresAt,
        mode: request.body.mode,
        guardVersion: request.body.guardVersion,
        lastSeen: Date.now(),
        endpoints: [
          ...new Set(
            (request.body.endpoints ?? []).map(
              (endpoint) =>
                `${peerAddress(request.raw.socket.remoteAddress)}${endpoint.slice(endpoint.lastIndexOf(':'))}`,
            ),
          ),
        ],
      });
      if (outage !== undefined) onUnreachable({ spiffeId, service, since, until });
      return reply.code(204).send();
    },
  );

  app.post(
    '/v1/registry/deregister',
    { onRequest: requireCaller(ca.trustDomain, ['workload']) },
    async (request, reply) => {
      await store.removeService(admittedCaller(request));
      // A stopped instance's last SVID would otherwise stay recoverable for the whole recovery window.
      const serial = peerSerial(request.raw.socket as TLSSocket);
      if (serial !== null)
        await store.spendSvid({ serial, successor: '', successorKey: null, at: ca.now(), via: 'retire' });
      return reply.code(204).send();
    },
  );

  app.get(
    '/v1/services',
    { onRequest: requireCaller(ca.trustDomain, ['admin', 'lockstep'], 'LOCKSTEP_CP_ADMIN_REQUIRED') },
    async () => {
      const now = Date.now();
      return {
        services: (await store.services()).map((entry) => ({ ...entry, stale: now - entry.lastSeen > STALE_AFTER_MS })),
      };
    },
  );
}
