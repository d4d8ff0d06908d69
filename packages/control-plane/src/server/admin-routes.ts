/**
 * The admin API: only over mTLS with an administrator's SVID (`spiffe://<td>/admin/<name>`), checked
 * in `onRequest`, before the body is read. Every call, allowed or refused, is an admin audit event.
 *
 *   POST /v1/admin/join-tokens   { service, ttlSeconds? } → { token, service, expiresAt }
 *   POST /v1/admin/revocations   { kind, value, reason } → the feed entry
 *   GET  /v1/admin/revocations?since=<seq>
 *   GET  /v1/admin/policy        the version in force, the latest refused change, drift per guard
 *   POST /v1/admin/users         { username, roles?, tenant?, password? } → the user (+ the password when generated)
 *   POST /v1/admin/keys/rotate   { key: "txn-token" | "idp" } → { retired, current, next, dropped }
 *   GET  /v1/admin/ca            the roots in the bundle and the rotation phase
 *   POST /v1/admin/ca/prepare    a new root joins the bundle (pushed to every guard)
 *   POST /v1/admin/ca/activate   the new root signs; the old one retires
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { recordAdminAction } from '../admin/admin-audit.ts';
import { createJoinToken } from '../ca/join-tokens.ts';
import { RootRotationError, type WorkloadCa } from '../ca/workload-ca.ts';
import { ControlPlaneError } from '../errors.ts';
import type { PolicyService } from '../policy/policy-service.ts';
import type { RevocationFeed } from '../store/revocation-feed.ts';
import type { ControlPlaneStore, RevocationKind } from '../store/store.ts';
import type { Rotation } from '../ca/key-ring.ts';
import { createUser } from '../idp/users.ts';
import { issueScanKit } from '../scan/scan-kit.ts';
import type { ScanTokens, ScanUser } from '../tts/scan-tokens.ts';
import { admittedCaller, callerOf, requireCaller } from './peer.ts';

type ScanTokenIssuer = (request: { scanner: string; users: readonly ScanUser[]; revokedSub: string; revokedTxn: string }) => Promise<ScanTokens>;
import { refusalCode } from './refusal.ts';

const startedAt = new WeakMap<FastifyRequest, number>();

const ACTIONS: Record<string, string> = {
  'POST /v1/admin/join-tokens': 'admin:join-token.create',
  'POST /v1/admin/revocations': 'admin:revoke',
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

export function registerAdminRoutes(app: FastifyInstance, ca: WorkloadCa, store: ControlPlaneStore, feed: RevocationFeed, policy: PolicyService | null, rotators: KeyRotators, scanTokens: ScanTokenIssuer | null): void {
  app.register(async (admin) => {
    const requireAdmin = requireCaller(ca.trustDomain, ['admin'], 'LOCKSTEP_CP_ADMIN_REQUIRED');
    admin.addHook('onRequest', async (request) => {
      startedAt.set(request, performance.now());
      await requireAdmin(request);
    });
    admin.addHook('onResponse', async (request, reply) => {
      const route = request.routeOptions.url ?? request.url.split('?')[0] ?? '';
      const body = request.body as { service?: string; value?: string; username?: string; key?: string; name?: string } | undefined;
      recordAdminAction({
        caller: callerOf(request),
        method: request.method,
        route,
        action: ACTIONS[`${request.method} ${route}`] ?? 'admin:unknown',
        resource: body?.service ?? body?.value ?? body?.username ?? body?.key ?? body?.name ?? 'control-plane',
        allowed: reply.statusCode < 400,
        reason: reply.statusCode < 400 ? 'LOCKSTEP_ALLOW' : refusalCode(request) ?? `HTTP_${reply.statusCode}`,
        startedAt: startedAt.get(request) ?? performance.now(),
      });
    });

    // The scanner's kit (scan/scan-kit.ts): its SVID, probe certificates and test Txn-Tokens.
    admin.post<{ Body: { name: string; csr: string; users: ScanUser[] } }>('/v1/admin/scan-kit', {
      schema: {
        body: {
          type: 'object', additionalProperties: false, required: ['name', 'csr', 'users'],
          properties: {
            name: { type: 'string', maxLength: 63 },
            csr: { type: 'string', maxLength: 8_192 },
            users: {
              type: 'array', minItems: 1, maxItems: 4,
              items: {
                type: 'object', additionalProperties: false, required: ['sub', 'roles'],
                properties: { sub: { type: 'string', minLength: 1, maxLength: 256 }, roles: { type: 'array', maxItems: 32, items: { type: 'string', minLength: 1, maxLength: 64 } }, tenant: { type: 'string', minLength: 1, maxLength: 128 } },
              },
            },
          },
        },
      },
    }, async (request) => {
      if (scanTokens === null) throw new ControlPlaneError('LOCKSTEP_CP_REQUEST_INVALID', 'this control plane runs no Txn-Token Service, so it cannot issue a scanner its test tokens');
      return issueScanKit(ca, feed, scanTokens, { name: request.body.name, csrPem: request.body.csr, users: request.body.users, actor: admittedCaller(request) });
    });

    admin.post<{ Body: { service: string; ttlSeconds?: number } }>('/v1/admin/join-tokens', {
      schema: { body: { type: 'object', additionalProperties: false, required: ['service'], properties: { service: { type: 'string', maxLength: 63 }, ttlSeconds: { type: 'integer', minimum: 1, maximum: 604_800 } } } },
    }, async (request) => {
      let created;
      try {
        created = await createJoinToken(store, ca, { service: request.body.service, createdBy: admittedCaller(request), ...(request.body.ttlSeconds === undefined ? {} : { ttlSeconds: request.body.ttlSeconds }) });
      } catch (error) {
        if (error instanceof TypeError) throw new ControlPlaneError('LOCKSTEP_CP_REQUEST_INVALID', error.message);
        throw error;
      }
      return { token: created.token, service: created.service, expiresAt: created.expiresAt.toISOString() };
    });

    admin.post<{ Body: { kind: RevocationKind; value: string; reason: string } }>('/v1/admin/revocations', {
      schema: {
        body: {
          type: 'object', additionalProperties: false, required: ['kind', 'value', 'reason'],
          properties: { kind: { enum: ['sub', 'txn', 'spiffeId', 'kid'] }, value: { type: 'string', minLength: 1, maxLength: 512 }, reason: { type: 'string', minLength: 1, maxLength: 512 } },
        },
      },
    }, async (request) =>
      feed.revoke({ kind: request.body.kind, value: request.body.value, reason: request.body.reason, actor: admittedCaller(request), at: Date.now() }));

    // Drift: for every registered guard, the slice version it should enforce and the one it reports.
    admin.get('/v1/admin/policy', async () => {
      const services = await Promise.all((await store.services()).map(async (entry) => {
        const expected = (await policy?.bundleFor(entry.service))?.version ?? null;
        return { service: entry.service, spiffeId: entry.spiffeId, expected, enforced: entry.policyVersion, inSync: expected !== null && expected === entry.policyVersion, lastSeen: entry.lastSeen };
      }));
      return { version: policy?.version ?? null, lastRefusal: policy?.lastRefusal ?? null, services };
    });

    admin.post<{ Body: { username: string; roles?: string[]; tenant?: string; password?: string } }>('/v1/admin/users', {
      schema: {
        body: {
          type: 'object', additionalProperties: false, required: ['username'],
          properties: {
            username: { type: 'string', maxLength: 64 }, roles: { type: 'array', maxItems: 32, items: { type: 'string', maxLength: 32 } },
            tenant: { type: 'string', maxLength: 64 }, password: { type: 'string', maxLength: 256 },
          },
        },
      },
    }, async (request, reply) => {
      const { user, password } = await createUser(store, request.body);
      // A generated password is shown once, here; a chosen one is never echoed.
      return reply.code(201).header('cache-control', 'no-store').send({
        username: user.username, roles: user.roles, tenant: user.tenant, ...(request.body.password === undefined ? { password } : {}),
      });
    });

    admin.post<{ Body: { key: string } }>('/v1/admin/keys/rotate', {
      schema: { body: { type: 'object', additionalProperties: false, required: ['key'], properties: { key: { type: 'string', maxLength: 32 } } } },
    }, async (request) => {
      const rotate = rotators.get(request.body.key);
      if (rotate === undefined) throw new ControlPlaneError('LOCKSTEP_CP_REQUEST_INVALID', `no rotating key named ${JSON.stringify(request.body.key)}; this control plane rotates: ${[...rotators.keys()].join(', ') || 'none'}`);
      return rotate();
    });

    admin.get('/v1/admin/ca', async () => ca.rootRotation());
    const rootStep = (step: () => Promise<unknown>) => async () => {
      try {
        return await step();
      } catch (error) {
        if (error instanceof RootRotationError) throw new ControlPlaneError('LOCKSTEP_CP_ROTATION_STATE', error.message);
        throw error;
      }
    };
    admin.post('/v1/admin/ca/prepare', rootStep(() => ca.prepareRootRotation()));
    admin.post('/v1/admin/ca/activate', rootStep(() => ca.activateNextRoot()));

    admin.get<{ Querystring: { since?: string } }>('/v1/admin/revocations', {
      // Query values are strings, and the server does not coerce types: a plain decimal is checked here.
      schema: { querystring: { type: 'object', additionalProperties: false, properties: { since: { type: 'string', pattern: '^[0-9]{1,15}$' } } } },
    }, async (request) => ({ revocations: await store.revocationsSince(Number(request.query.since ?? '0')) }));
  });
}
