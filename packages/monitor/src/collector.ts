/**
 * The collector: `POST /v1/audit/events`, on the control plane's server, over mTLS. A guard sends
 * its decision events in batches, gzip-compressed:
 *
 *   { "stream": "<sender stream id>", "dropped": <events it had to drop, cumulative>,
 *     "written": <the highest position it has assigned so far>, "final": true (its last batch),
 *     "events": [ { "seq": <position in the stream>, "event": { …decision event… } }, … ] }
 *
 * `events` may be empty: a keep-alive (a live sender sends one when it has sent nothing for 30 s)
 * or a final batch. `written` and `final` let verify tell a stream that ended cleanly from one
 * whose sender died with events it had assigned but never delivered ("ended uncleanly").
 *
 * The source is the sender's SPIFFE ID from its certificate, never a field of the body; an event
 * whose `service` is not the sender's is refused (it would claim another source). Malformed,
 * oversized or unauthenticated batches are refused and counted; nothing in them is stored.
 */
import { promisify } from 'node:util';
import { gunzip } from 'node:zlib';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import {
  admittedCaller,
  admittedWorkload,
  ControlPlaneError,
  requireCaller,
  type AuditAppend,
  type ControlPlaneStore,
} from '@lockstep/control-plane';

const inflate = promisify(gunzip);
export const COLLECTOR_PATH = '/v1/audit/events';
const MAX_COMPRESSED = 1024 * 1024;
const MAX_INFLATED = 8 * 1024 * 1024;
const MAX_EVENTS = 5_000;

export interface CollectorStats {
  batches: number;
  events: number;
  duplicates: number;
  refused: { malformed: number; oversized: number; foreign: number; unauthenticated: number };
}

export interface CollectorOptions {
  readonly store: ControlPlaneStore;
  readonly trustDomain: string;
  /** Told about every stored batch (detections, the dashboard's live view). */
  readonly onAppended?: (batch: {
    source: string;
    service: string;
    result: AuditAppend;
    events: readonly Record<string, unknown>[];
  }) => void;
}

export interface Collector {
  readonly stats: CollectorStats;
  /** For `startControlPlane({ extensions: [collector.register] })`. */
  register(app: FastifyInstance): void;
  /**
   * Takes no more batches (503: the sender keeps them) and waits for the appends under way: call it
   * after the server stopped and before the store closes.
   */
  close(): Promise<void>;
}

const STRING_FIELDS = ['time', 'service', 'requestId', 'method', 'resource', 'decision', 'reason'] as const;
const NULLABLE_STRING_FIELDS = ['caller', 'sub', 'txn', 'route', 'action', 'policyVersion', 'traceId'] as const;

/** Why `event` is not a decision event of `service`, or null. */
function eventProblem(event: unknown, service: string): { kind: 'malformed' | 'foreign'; detail: string } | null {
  if (typeof event !== 'object' || event === null || Array.isArray(event))
    return { kind: 'malformed', detail: 'an event is a JSON object' };
  const record = event as Record<string, unknown>;
  for (const field of STRING_FIELDS)
    if (typeof record[field] !== 'string' || (record[field] as string).length > 2_048)
      return { kind: 'malformed', detail: `event.${field} must be a string` };
  for (const field of NULLABLE_STRING_FIELDS)
    if (
      record[field] !== null &&
      record[field] !== undefined &&
      (typeof record[field] !== 'string' || (record[field] as string).length > 2_048)
    )
      return { kind: 'malformed', detail: `event.${field} must be a string or null` };
  if (record.decision !== 'allow' && record.decision !== 'deny')
    return { kind: 'malformed', detail: 'event.decision must be allow or deny' };
  if (!Array.isArray(record.policyIds) || record.policyIds.some((id) => typeof id !== 'string'))
    return { kind: 'malformed', detail: 'event.policyIds must be a list of strings' };
  if (typeof record.dryRun !== 'boolean' || typeof record.latencyMs !== 'number')
    return { kind: 'malformed', detail: 'event.dryRun and event.latencyMs are required' };
  if (record.service !== service)
    return {
      kind: 'foreign',
      detail: `an event of ${JSON.stringify(record.service)} sent by ${service}: a guard reports its own decisions only`,
    };
  return null;
}

export function createCollector(options: CollectorOptions): Collector {
  let closed = false;
  const inFlight = new Set<Promise<unknown>>();
  const stats: CollectorStats = {
    batches: 0,
    events: 0,
    duplicates: 0,
    refused: { malformed: 0, oversized: 0, foreign: 0, unauthenticated: 0 },
  };
  const refuse = (kind: keyof CollectorStats['refused'], detail: string): never => {
    stats.refused[kind] += 1;
    throw new ControlPlaneError('LOCKSTEP_CP_REQUEST_INVALID', detail);
  };

  function register(app: FastifyInstance): void {
    app.register(async (scope) => {
      // The body arrives compressed: read it as bytes (bounded), inflate it (bounded), then parse.
      scope.addContentTypeParser(
        'application/json',
        { parseAs: 'buffer', bodyLimit: MAX_COMPRESSED },
        (_request, body, done) => done(null, body),
      );
      scope.addHook('onError', async (_request, _reply, error: Error & { code?: string }) => {
        if (error.code === 'FST_ERR_CTP_BODY_TOO_LARGE') stats.refused.oversized += 1;
      });
      const admit = requireCaller(options.trustDomain, ['workload']);
      scope.post(
        COLLECTOR_PATH,
        {
          onRequest: async (request: FastifyRequest) => {
            try {
              await admit(request);
            } catch (error) {
              stats.refused.unauthenticated += 1;
              throw error;
            }
          },
        },
        async (request, reply) => {
          const source = admittedCaller(request);
          const service = admittedWorkload(request);
          if (!Buffer.isBuffer(request.body))
            return refuse(
              'malformed',
              'send the batch as gzip-compressed JSON (content-type application/json, content-encoding gzip)',
            );
          if (request.headers['content-encoding'] !== 'gzip')
            return refuse('malformed', 'the batch must be gzip-compressed (content-encoding: gzip)');
          let text: string;
          try {
            text = (await inflate(request.body, { maxOutputLength: MAX_INFLATED })).toString('utf8');
          } catch (error) {
            return refuse(
              (error as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE' ? 'oversized' : 'malformed',
              `the batch does not inflate (${(error as Error).message}); at most ${MAX_INFLATED} bytes inflated`,
            );
          }
          let batch: { stream?: unknown; dropped?: unknown; written?: unknown; final?: unknown; events?: unknown };
          try {
            batch = JSON.parse(text) as typeof batch;
          } catch {
            return refuse('malformed', 'the batch is not JSON');
          }
          if (typeof batch !== 'object' || batch === null)
            return refuse('malformed', 'the batch is a JSON object { stream, dropped, events }');
          if (typeof batch.stream !== 'string' || !/^[\w-]{1,64}$/.test(batch.stream))
            return refuse('malformed', 'stream must be 1–64 letters, digits, _ or -');
          if (!Number.isSafeInteger(batch.dropped) || (batch.dropped as number) < 0)
            return refuse('malformed', 'dropped must be a whole number ≥ 0');
          if (batch.written !== undefined && (!Number.isSafeInteger(batch.written) || (batch.written as number) < 0))
            return refuse('malformed', 'written must be a whole number ≥ 0');
          if (batch.final !== undefined && typeof batch.final !== 'boolean')
            return refuse('malformed', 'final must be true or false');
          if (!Array.isArray(batch.events) || batch.events.length > MAX_EVENTS)
            return refuse(
              Array.isArray(batch.events) ? 'oversized' : 'malformed',
              `events must be a list of at most ${MAX_EVENTS}`,
            );
          const entries = [];
          const events: Record<string, unknown>[] = [];
          for (const item of batch.events as unknown[]) {
            const { seq, event } = (item ?? {}) as { seq?: unknown; event?: unknown };
            if (!Number.isSafeInteger(seq) || (seq as number) < 1)
              return refuse('malformed', 'every event has a seq: its position in the stream, from 1');
            if (typeof batch.written === 'number' && (seq as number) > batch.written)
              return refuse(
                'malformed',
                `event ${seq as number} is beyond written (${batch.written}): written is the highest position assigned so far`,
              );
            const problem = eventProblem(event, service);
            if (problem !== null) return refuse(problem.kind, problem.detail);
            const record = event as Record<string, unknown>;
            events.push(record);
            entries.push({ streamSeq: seq as number, event: JSON.stringify(record) });
          }
          if (closed)
            throw new ControlPlaneError(
              'LOCKSTEP_CP_STORE',
              'the collector is shutting down; send the batch again later',
            );
          const appending = options.store.appendAudit(
            source,
            {
              stream: batch.stream,
              dropped: batch.dropped as number,
              entries,
              ...(batch.written === undefined ? {} : { written: batch.written as number }),
              ...(batch.final === true ? { final: true } : {}),
            },
            Date.now(),
          );
          inFlight.add(appending);
          const result = await appending.finally(() => inFlight.delete(appending));
          stats.batches += 1;
          stats.events += result.accepted;
          stats.duplicates += result.duplicates;
          options.onAppended?.({ source, service, result, events });
          return reply.send({ accepted: result.accepted, duplicates: result.duplicates, lastSeq: result.head.seq });
        },
      );
    });
  }

  return {
    stats,
    register,
    async close() {
      closed = true;
      await Promise.allSettled([...inFlight]);
    },
  };
}
