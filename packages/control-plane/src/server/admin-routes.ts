/**
 * The admin API: only over mTLS with an administrator's SVID (`spiffe://<td>/admin/<name>`), checked
 * in `onRequest`, before the body is read. Every call, allowed or refused, is an admin audit event;
 * an administrator's call is in the audit trail before it runs (`recordEveryCall` below).
 *
 *   POST /v1/admin/join-tokens   { service, ttlSeconds? } → { token, service, expiresAt }
 *   POST /v1/admin/revocations   { kind, value, reason } → the feed entry
 *   POST /v1/admin/revocations/lift   { kind, value, reason } → the entry, lifted, at its new feed position
 *   GET  /v1/admin/revocations?since=<seq>
 *   GET  /v1/admin/policy        the version in force, the latest refused change, drift per guard
 *   POST /v1/admin/users         { username, roles?, tenant?, password? } → the user (+ the password when generated)
 *   POST /v1/admin/keys/rotate   { key: "txn-token" | "idp" } → { retired, current, next, dropped }
 *   GET  /v1/admin/ca            the roots in the bundle and the rotation phase
 *   POST /v1/admin/ca/prepare    a new root joins the bundle (pushed to every guard)
 *   POST /v1/admin/ca/activate   the new root signs; the old one retires
 *
 * Extensions add admin endpoints of their own under the same checks and the same trail
 * (`registerAdminScope`, offered to them as `ExtensionContext.adminRoutes`): the monitor's
 * `GET /v1/admin/events`.
 */
import { randomUUID } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { recordAdminAction, recordRefusedAdminCall, writeAdminAction, type AdminAction } from '../admin/admin-audit.ts';
import { createJoinToken } from '../ca/join-tokens.ts';
import { RootRotationError, type WorkloadCa } from '../ca/workload-ca.ts';
import { ControlPlaneError } from '../errors.ts';
import type { PolicyService } from '../policy/policy-service.ts';
import type { RevocationFeed } from '../store/revocation-feed.ts';
import type { ControlPlaneStore, RevocationKind } from '../store/store.ts';
import type { Rotation } from '../ca/key-ring.ts';
import { createUser } from '../idp/users.ts';
import { issueScanKit } from '../scan/scan-kit.ts';
import type { ScanTokenRequest, ScanTokens, ScanUser } from '../tts/scan-tokens.ts';
import { admittedCaller, callerOf, requireCaller } from './peer.ts';
import { refusalCode } from './refusal.ts';

type ScanTokenIssuer = (request: ScanTokenRequest) => Promise<ScanTokens>;

const ACTIONS: Record<string, string> = {
  'POST /v1/admin/join-tokens': 'admin:join-token.create',
  'POST /v1/admin/revocations': 'admin:revoke',
  'POST /v1/admin/revocations/lift': 'admin:revoke.lift',
  'GET /v1/admin/revocations': 'admin:revocations.read',
  'GET /v1/admin/policy': 'admin:policy.status',
  'POST /v1/admin/users': 'admin:user.create',
  'POST /v1/admin/keys/rotate': 'admin:key.rotate',
  'GET /v1/admin/ca': 'admin:ca.status',
  'POST /v1/admin/ca/prepare': 'admin:root.prepare',
  'POST /v1/admin/ca/activate': 'admin:root.activate',
  'POST /v1/admin/scan-kit': 'admin:scan-kit.issue',
};

/** Rotations the admin API can trigger, by key name; filled as the components start. */
export type KeyRotators = Map<string, () => Promise<Rotation>>;

/** Audit actions by `METHOD /route`, e.g. `{ 'GET /v1/admin/events': 'admin:events.read' }`. */
export type AdminActions = Readonly<Record<string, string>>;

/**
 * Endpoints that `routes` registers, under the admin API's checks: an administrator's SVID only,
 * checked before the body is read, and every call in the audit trail under its name in `actions`
 * (a route missing from it is recorded as `admin:unknown`).
 */
export function registerAdminScope(
  app: FastifyInstance,
  trustDomain: string,
  actions: AdminActions,
  routes: (admin: FastifyInstance) => void | Promise<void>,
): void {
  app.register(async (admin) => {
    recordEveryCall(admin, requireCaller(trustDomain, ['admin'], 'LOCKSTEP_CP_ADMIN_REQUIRED'), actions);
    await routes(admin);
  });
}

export function registerAdminRoutes(
  app: FastifyInstance,
  ca: WorkloadCa,
  store: ControlPlaneStore,
  feed: RevocationFeed,
  policy: PolicyService | null,
  rotators: KeyRotators,
  scanTokens: ScanTokenIssuer | null,
): void {
  registerAdminScope(app, ca.trustDomain, ACTIONS, (admin) => {
    // The scanner's kit (scan/scan-kit.ts): its SVID, probe certificates and test Txn-Tokens.
    admin.post<{ Body: { name: string; csr: string; users: ScanUser[] } }>(
      '/v1/admin/scan-kit',
      {
        schema: {
          body: {
            type: 'object',
            additionalProperties: false,
            required: ['name', 'csr', 'users'],
            properties: {
              name: { type: 'string', maxLength: 63 },
              csr: { type: 'string', maxLength: 8_192 },
              users: {
                type: 'array',
                minItems: 1,
                maxItems: 4,
                items: {
                  type: 'object',
                  additionalProperties: false,
                  required: ['sub', 'roles'],
                  properties: {
                    sub: { type: 'string', minLength: 1, maxLength: 256 },
                    roles: { type: 'array', maxItems: 32, items: { type: 'string', minLength: 1, maxLength: 64 } },
                    tenant: { type: 'string', minLength: 1, maxLength: 128 },
                  },
                },
              },
            },
          },
        },
      },
      async (request) => {
        if (scanTokens === null)
          throw new ControlPlaneError(
            'LOCKSTEP_CP_REQUEST_INVALID',
            'this control plane runs no Txn-Token Service, so it cannot issue a scanner its test tokens',
          );
        const issuer = { ca, feed, store, scanTokens, policy: () => policy?.set ?? null };
        return issueScanKit(issuer, {
          name: request.body.name,
          csrPem: request.body.csr,
          users: request.body.users,
          actor: admittedCaller(request),
        });
      },
    );

    admin.post<{ Body: { service: string; ttlSeconds?: number } }>(
      '/v1/admin/join-tokens',
      {
        schema: {
          body: {
            type: 'object',
            additionalProperties: false,
            required: ['service'],
            properties: {
              service: { type: 'string', maxLength: 63 },
              ttlSeconds: { type: 'integer', minimum: 1, maximum: 604_800 },
            },
          },
        },
      },
      async (request) => {
        let created;
        try {
          created = await createJoinToken(store, ca, {
            service: request.body.service,
            createdBy: admittedCaller(request),
            ...(request.body.ttlSeconds === undefined ? {} : { ttlSeconds: request.body.ttlSeconds }),
          });
        } catch (error) {
          if (error instanceof TypeError) throw new ControlPlaneError('LOCKSTEP_CP_REQUEST_INVALID', error.message);
          throw error;
        }
        return { token: created.token, service: created.service, expiresAt: created.expiresAt.toISOString() };
      },
    );

    const revocationBody = {
      body: {
        type: 'object',
        additionalProperties: false,
        required: ['kind', 'value', 'reason'],
        properties: {
          kind: { enum: ['sub', 'txn', 'spiffeId', 'kid'] },
          value: { type: 'string', minLength: 1, maxLength: 512 },
          reason: { type: 'string', minLength: 1, maxLength: 512 },
        },
      },
    };
    admin.post<{ Body: { kind: RevocationKind; value: string; reason: string } }>(
      '/v1/admin/revocations',
      { schema: revocationBody },
      async (request) =>
        feed.revoke({
          kind: request.body.kind,
          value: request.body.value,
          reason: request.body.reason,
          actor: admittedCaller(request),
          at: Date.now(),
        }),
    );

    // A revocation made by mistake, taken back: only what holds can be lifted, so a typo changes nothing.
    admin.post<{ Body: { kind: RevocationKind; value: string; reason: string } }>(
      '/v1/admin/revocations/lift',
      { schema: revocationBody },
      async (request) => {
        const { kind, value, reason } = request.body;
        const lifted = await feed.lift(kind, value, { reason, actor: admittedCaller(request), at: Date.now() });
        if (lifted === null)
          throw new ControlPlaneError(
            'LOCKSTEP_CP_NOT_REVOKED',
            `no revocation holds for ${kind} ${JSON.stringify(value)} (never revoked, or lifted already)`,
          );
        return lifted;
      },
    );

    // Drift: for every registered guard, the slice version it should enforce and the one it reports.
    admin.get('/v1/admin/policy', async () => {
      const services = await Promise.all(
        (await store.services()).map(async (entry) => {
          const expected = (await policy?.bundleFor(entry.service))?.version ?? null;
          return {
            service: entry.service,
            spiffeId: entry.spiffeId,
            expected,
            enforced: entry.policyVersion,
            inSync: expected !== null && expected === entry.policyVersion,
            lastSeen: entry.lastSeen,
          };
        }),
      );
      return { version: policy?.version ?? null, lastRefusal: policy?.lastRefusal ?? null, services };
    });

    admin.post<{ Body: { username: string; roles?: string[]; tenant?: string; password?: string } }>(
      '/v1/admin/users',
      {
        schema: {
          body: {
            type: 'object',
            additionalProperties: false,
            required: ['username'],
            properties: {
              username: { type: 'string', maxLength: 64 },
              roles: { type: 'array', maxItems: 32, items: { type: 'string', maxLength: 32 } },
              tenant: { type: 'string', maxLength: 64 },
              password: { type: 'string', maxLength: 256 },
            },
          },
        },
      },
      async (request, reply) => {
        const { user, password } = await createUser(store, request.body);
        // A generated password is shown once, here; a chosen one is never echoed.
        return reply
          .code(201)
          .header('cache-control', 'no-store')
          .send({
            username: user.username,
            roles: user.roles,
            tenant: user.tenant,
            ...(request.body.password === undefined ? { password } : {}),
          });
      },
    );

    admin.post<{ Body: { key: string } }>(
      '/v1/admin/keys/rotate',
      {
        schema: {
          body: {
            type: 'object',
            additionalProperties: false,
            required: ['key'],
            properties: { key: { type: 'string', maxLength: 32 } },
          },
        },
      },
      async (request) => {
        const rotate = rotators.get(request.body.key);
        if (rotate === undefined)
          throw new ControlPlaneError(
            'LOCKSTEP_CP_REQUEST_INVALID',
            `no rotating key named ${JSON.stringify(request.body.key)}; this control plane rotates: ${[...rotators.keys()].join(', ') || 'none'}`,
          );
        return rotate();
      },
    );

    admin.get('/v1/admin/ca', async () => ca.rootRotation());
    const rootStep = (step: () => Promise<unknown>) => async () => {
      try {
        return await step();
      } catch (error) {
        if (error instanceof RootRotationError)
          throw new ControlPlaneError('LOCKSTEP_CP_ROTATION_STATE', error.message);
        throw error;
      }
    };
    admin.post(
      '/v1/admin/ca/prepare',
      rootStep(() => ca.prepareRootRotation()),
    );
    admin.post(
      '/v1/admin/ca/activate',
      rootStep(() => ca.activateNextRoot()),
    );

    admin.get<{ Querystring: { since?: string } }>(
      '/v1/admin/revocations',
      {
        // Query values are strings, and the server does not coerce types: a plain decimal is checked here.
        schema: {
          querystring: {
            type: 'object',
            additionalProperties: false,
            properties: { since: { type: 'string', pattern: '^[0-9]{1,15}$' } },
          },
        },
      },
      async (request) => ({ revocations: await store.revocationsSince(Number(request.query.since ?? '0')) }),
    );
  });
}

/** What the admin hooks know of one call. */
interface CallRecord {
  readonly startedAt: number;
  /** Shared by the call's events: its authorisation, and its failure if it then fails. */
  readonly requestId: string;
  /** The caller holds an administrator's SVID. */
  admitted: boolean;
  /** Its authorisation is stored in the trail, so it may run. */
  recorded: boolean;
  /** The trail could not take its authorisation: refused, nothing ran. */
  unrecorded: boolean;
}

const calls = new WeakMap<FastifyRequest, CallRecord>();

/**
 * The hooks that put every admin call in the audit trail, in the order they run:
 * - onRequest: only an administrator's SVID is admitted, before the body is read;
 * - preHandler: the call's event (allow) is stored before the call runs. If the trail cannot take it,
 *   the call is refused (LOCKSTEP_CP_AUDIT_UNAVAILABLE) and nothing is applied. So a crash at any
 *   point leaves the event in the trail: never an applied action without one;
 * - onSend: an administrator's call that failed (a refused body, an error of the action) gets its
 *   failure event, also stored before the answer leaves; when it cannot be, the answer says so;
 * - onResponse: a refused caller's event, after the answer and not waited for: nothing ran, and the
 *   trail limits such events per source, so an outsider's flood cannot delay or push out real ones.
 */
function recordEveryCall(
  admin: FastifyInstance,
  requireAdmin: (request: FastifyRequest) => Promise<void>,
  actions: AdminActions,
): void {
  admin.addHook('onRequest', async (request) => {
    const call = callRecord(request);
    await requireAdmin(request);
    call.admitted = true;
  });
  admin.addHook('preHandler', async (request) => {
    const call = callRecord(request);
    try {
      await writeAdminAction(actionOf(request, call, 'LOCKSTEP_ALLOW', actions));
    } catch (error) {
      call.unrecorded = true;
      throw new ControlPlaneError(
        'LOCKSTEP_CP_AUDIT_UNAVAILABLE',
        `nothing was done (${(error as Error).message}); ` +
          'the control plane prints why; fix the store, then send the call again',
      );
    }
    call.recorded = true;
  });
  admin.addHook('onSend', async (request, reply, payload) => {
    const call = callRecord(request);
    if (!call.admitted || (call.recorded && reply.statusCode < 400)) return payload;
    const failure = actionOf(request, call, refusalCode(request) ?? `HTTP_${reply.statusCode}`, actions);
    if (call.unrecorded) {
      // The trail is failing: queued behind the authorisation it could not take yet, to land with it.
      recordAdminAction(failure);
      return payload;
    }
    try {
      await writeAdminAction(failure);
      return payload;
    } catch (error) {
      return unrecordedFailure(reply, failure.reason, error as Error);
    }
  });
  admin.addHook('onResponse', async (request, reply) => {
    const call = callRecord(request);
    if (call.admitted) return;
    const source = callerOf(request) ?? `address ${request.ip}`;
    const refused = actionOf(request, call, refusalCode(request) ?? `HTTP_${reply.statusCode}`, actions);
    recordRefusedAdminCall(refused, source);
  });
}

function callRecord(request: FastifyRequest): CallRecord {
  let call = calls.get(request);
  if (call === undefined) {
    call = {
      startedAt: performance.now(),
      requestId: randomUUID(),
      admitted: false,
      recorded: false,
      unrecorded: false,
    };
    calls.set(request, call);
  }
  return call;
}

function actionOf(request: FastifyRequest, call: CallRecord, reason: string, actions: AdminActions): AdminAction {
  const route = request.routeOptions.url ?? request.url.split('?')[0] ?? '';
  const key = `${request.method} ${route}`;
  const detail = detailOf(DETAIL_FIELDS[key], request.body);
  return {
    caller: callerOf(request),
    method: request.method,
    route,
    action: actions[key] ?? 'admin:unknown',
    resource: resourceOf(request.body),
    allowed: reason === 'LOCKSTEP_ALLOW',
    reason,
    startedAt: call.startedAt,
    requestId: call.requestId,
    ...(detail === undefined ? {} : { detail }),
  };
}

const RESOURCE_FIELDS = ['service', 'value', 'username', 'key', 'name'] as const;

/** What the call is about, from its body; a refused body may hold anything, so only a bounded string is kept. */
function resourceOf(body: unknown): string {
  if (typeof body !== 'object' || body === null) return 'control-plane';
  for (const field of RESOURCE_FIELDS) {
    const value: unknown = Object.hasOwn(body, field) ? (body as Record<string, unknown>)[field] : undefined;
    if (typeof value === 'string') return value.slice(0, 512);
  }
  return 'control-plane';
}

/**
 * What the trail keeps of a call beyond its resource. A revocation's and a lift's kind and reason: the
 * store keeps only the latest state of a value (revoking a lifted value again drops who lifted it and
 * why), so the trail is where each step stays.
 */
const DETAIL_FIELDS: Readonly<Record<string, readonly string[]>> = {
  'POST /v1/admin/revocations': ['kind', 'reason'],
  'POST /v1/admin/revocations/lift': ['kind', 'reason'],
};

/** The string `fields` of the body, each bounded as the resource is; undefined when there are none. */
function detailOf(fields: readonly string[] | undefined, body: unknown): Record<string, string> | undefined {
  if (fields === undefined || typeof body !== 'object' || body === null) return undefined;
  const detail: Record<string, string> = {};
  for (const field of fields) {
    const value: unknown = Object.hasOwn(body, field) ? (body as Record<string, unknown>)[field] : undefined;
    if (typeof value === 'string') detail[field] = value.slice(0, 512);
  }
  return Object.keys(detail).length === 0 ? undefined : detail;
}

/** The answer of a failed call whose failure could not be recorded: the administrator must know. */
function unrecordedFailure(reply: FastifyReply, failedWith: string, error: Error): string {
  const refusal = new ControlPlaneError(
    'LOCKSTEP_CP_AUDIT_UNAVAILABLE',
    `the call failed (${failedWith}) and ` +
      `that failure could not be recorded (${error.message}); fix the store, then check the state and retry`,
  );
  reply.code(refusal.status).header('content-type', 'application/json; charset=utf-8');
  return JSON.stringify({ error: refusal.code, message: refusal.message });
}
