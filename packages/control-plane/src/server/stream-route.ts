/**
 * `GET /v1/stream` — server-sent events to one guard, over mTLS with its workload SVID:
 *
 *   event: trust-bundle data: { bundle }             the trust bundle (PEM roots), now and after every root-rotation step
 *   event: policy       data: { version, bundle }    its service's signed slice (and the slice's version), now and on every change
 *   id: <seq>  event: revocation  data: the feed entry   every revocation after Last-Event-ID / ?since
 *   id: <seq>  event: lift  data: the entry, `lifted` set   a revocation taken back (the guard removes the value)
 *   : ping                                           every 15 s, so that a dead connection is noticed
 *
 * Lifts travel apart from revocations because guards that predate them apply every `revocation`
 * event and every entry of `/v1/revocations` as a revocation, whatever else it holds: a lift sent
 * as one would revoke the value it lifts on every such guard. They ignore an event name they do not
 * listen to, so a lift is an event of its own, and `/v1/revocations` lists lifted entries only to a
 * guard that asks for them (header `lockstep-revocation-lifts: 1`, which older control planes ignore).
 * A guard of the previous version keeps a lifted value revoked until it restarts (its replay from
 * the start no longer holds the revocation) or is upgraded.
 *
 * A guard that reconnects sends Last-Event-ID and catches up on what it missed. Revocations made in
 * this process or notified by other replicas are pushed at once (see revocation-feed.ts). A stream
 * whose own caller is revoked ends after that revocation is sent; its reconnection is refused
 * (LOCKSTEP_CP_PEER_REVOKED, peer.ts).
 *
 * A replica cut off from the store would miss revocations made through the others while its pings
 * said all is well. So a stream is answered only once its catch-up was read from the store (a failure
 * is a 503 LOCKSTEP_CP_STORE, on which the guard asks another replica); and once the feed has not read
 * the store for three re-reads (revocation-feed.ts), the replica ends its streams and answers new ones
 * 503 LOCKSTEP_CP_STORE until it reads again.
 *
 * The fallback, for networks where a long-lived response does not get through (or while the stream
 * is down), is plain GETs over the same mTLS:
 *
 *   GET /v1/policy/bundle           the caller's slice { version, bundle }; ETag = version, 304 on If-None-Match
 *   GET /v1/revocations?since=<seq> { revocations: [...] } after that feed position (lifted entries too
 *                                   with `lockstep-revocation-lifts: 1`)
 */
import type { FastifyInstance } from 'fastify';
import { REVOCATION_LIFTS_HEADER } from '@lockstep/workload';
import type { WorkloadCa } from '../ca/workload-ca.ts';
import { ControlPlaneError } from '../errors.ts';
import type { PolicyService } from '../policy/policy-service.ts';
import type { RevocationFeed } from '../store/revocation-feed.ts';
import type { ControlPlaneStore, RevocationRecord } from '../store/store.ts';
import { admittedCaller, admittedWorkload, requireCaller } from './peer.ts';

const POSITION = /^[0-9]{1,15}$/;
const HEARTBEAT_MS = 15_000;
const RECONNECT_MS = 1_000;

export function registerStreamRoute(
  app: FastifyInstance,
  ca: WorkloadCa,
  store: ControlPlaneStore,
  feed: RevocationFeed,
  policy: PolicyService | null,
): void {
  app.get('/v1/policy/bundle', { onRequest: requireCaller(ca.trustDomain, ['workload']) }, async (request, reply) => {
    const slice = (await policy?.bundleFor(admittedWorkload(request))) ?? null;
    if (slice === null)
      throw new ControlPlaneError('LOCKSTEP_CP_NO_POLICY', 'the control plane has no valid policy set yet');
    const etag = `"${slice.version}"`;
    reply.header('etag', etag).header('cache-control', 'no-cache');
    if (request.headers['if-none-match'] === etag) return reply.code(304).send();
    return slice;
  });

  app.get<{ Querystring: { since?: string } }>(
    '/v1/revocations',
    {
      schema: {
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: { since: { type: 'string', pattern: POSITION.source } },
        },
      },
      onRequest: requireCaller(ca.trustDomain, ['workload']),
    },
    async (request, reply) => {
      const entries = await store.revocationsSince(Number(request.query.since ?? '0'));
      reply.header('vary', REVOCATION_LIFTS_HEADER);
      const withLifts = request.headers[REVOCATION_LIFTS_HEADER] === '1';
      return { revocations: withLifts ? entries : entries.filter((entry) => entry.lifted === null) };
    },
  );

  app.get<{ Querystring: { since?: string } }>(
    '/v1/stream',
    {
      schema: {
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: { since: { type: 'string', pattern: POSITION.source } },
        },
      },
      onRequest: requireCaller(ca.trustDomain, ['workload']),
    },
    async (request, reply) => {
      const service = admittedWorkload(request);
      const caller = admittedCaller(request);
      const resumeFrom = request.headers['last-event-id'] ?? request.query.since ?? '0';
      if (typeof resumeFrom !== 'string' || !POSITION.test(resumeFrom))
        throw new ControlPlaneError('LOCKSTEP_CP_REQUEST_INVALID', 'Last-Event-ID must be a feed position');
      let position = Number(resumeFrom);
      if (!feed.storeReachable())
        throw new ControlPlaneError('LOCKSTEP_CP_STORE', 'this replica has not read the revocation feed lately');

      // Held from now until the catch-up is sent: an entry announced in between is neither lost nor sent early.
      const announced: RevocationRecord[] = [];
      let onRevocation = (entry: RevocationRecord): void => {
        announced.push(entry);
      };
      const stopRevocations = feed.onRevocation((entry) => onRevocation(entry));
      let missed: RevocationRecord[];
      try {
        // Read before answering: a failure here is an error answer the guard fails over on.
        missed = await store.revocationsSince(position);
      } catch (error) {
        stopRevocations();
        throw error;
      }

      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-store',
        'x-accel-buffering': 'no',
      });
      const write = (text: string) => {
        if (!res.destroyed && !res.writableEnded) res.write(text);
      };
      // A guard that loses the stream tries again after a second (the EventSource default is 3 s).
      write(`retry: ${RECONNECT_MS}\n\n`);

      const sendRevocation = (entry: RevocationRecord) => {
        if (entry.seq <= position) return;
        position = entry.seq;
        const event = entry.lifted === null ? 'revocation' : 'lift';
        write(`id: ${entry.seq}\nevent: ${event}\ndata: ${JSON.stringify(entry)}\n\n`);
        // A revoked caller gets nothing more; every request it makes from now on is refused.
        if (entry.kind === 'spiffeId' && entry.value === caller && entry.lifted === null) res.end();
      };
      let sentVersion: string | null = null;
      const sendPolicy = async () => {
        const slice = (await policy?.bundleFor(service)) ?? null;
        // A change that leaves this service's slice as it was is not sent again.
        if (slice === null || slice.version === sentVersion) return;
        sentVersion = slice.version;
        write(`event: policy\ndata: ${JSON.stringify(slice)}\n\n`);
      };

      const sendTrustBundle = () => write(`event: trust-bundle\ndata: ${JSON.stringify({ bundle: ca.bundlePem })}\n\n`);
      const stopBundle = ca.onBundleChange(sendTrustBundle);
      // The guard moves to a replica that can read the store.
      const stopLost = feed.onStoreLost(() => res.end());
      const stopPolicy =
        policy?.onChange((change) => {
          if (change.kind === 'applied') void sendPolicy();
        }) ?? (() => {});
      const heartbeat = setInterval(() => write(': ping\n\n'), HEARTBEAT_MS);
      const stop = () => {
        stopBundle();
        stopRevocations();
        stopLost();
        stopPolicy();
        clearInterval(heartbeat);
      };
      res.on('close', stop);
      // The guard hung up while the catch-up was read: 'close' has been and gone.
      if (res.destroyed) {
        stop();
        return;
      }
      sendTrustBundle();
      await sendPolicy();
      for (const entry of [...missed, ...announced].sort((a, b) => a.seq - b.seq)) sendRevocation(entry);
      onRevocation = sendRevocation;
    },
  );
}
