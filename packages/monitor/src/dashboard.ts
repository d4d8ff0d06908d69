/**
 * The dashboard's server side, on the control plane under /dashboard: administrators sign in through
 * Lockstep's own identity provider (authorization code + PKCE; a public client registered by this
 * extension) and must hold the role `admin`. Then the read-only API:
 *
 *   GET /dashboard/api/overview        every registered guard's posture: policy version and drift, mode, SVID expiry, deny rate, staleness
 *   GET /dashboard/api/graph           who called whom in the newest decisions, allowed and denied
 *   GET /dashboard/api/alerts          the newest alerts
 *   GET /dashboard/api/events?service&decision&reason&sub&txn   the newest decisions, filtered (recent-events.ts;
 *                                      administrators also read them over mTLS: GET /v1/admin/events, `lockstep events`)
 *   GET /dashboard/api/probes          the newest probes of scanners, counted per service and per scanner
 *   GET /dashboard/api/txn/:txn        one transaction's call chain
 *   GET /dashboard/api/scans           the newest scan runs: who scanned, when, how long, the verdict and its counts
 *   GET /dashboard/api/scans/:runId    one run with its whole report
 *
 * Deny rates, the graph and the events count real traffic only: a scanner's probes (probes.ts) are
 * counted on their own page, and a scan, however large, never pushes real decisions out of view. A
 * deny rate is over requests: connections that never became one (a failed TLS handshake, plain HTTP
 * to the TLS port — which no guard can tell from a scanner's) are counted beside it.
 *
 * Without a session: 401 for the API, a redirect to the sign-in for pages. Signed in without the
 * admin role: 403. There is no API that changes anything.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { createLocalJWKSet, jwtVerify } from 'jose';
import { request as httpRequest } from 'undici';
import { parseSpiffeId } from '@lockstep/guard';
import {
  controlPlaneAgent,
  type ControlPlaneStore,
  type ExtensionContext,
  type ExtensionHooks,
} from '@lockstep/control-plane';
import { callChain } from './correlate.ts';
import { scannerOf } from './probes.ts';
import { EVENT_FILTERS, MAX_EVENTS, newestEvents, recentDecisions } from './recent-events.ts';
import { scanStatus, type ScanSummaryCounts } from './scans.ts';

export const DASHBOARD_CLIENT_ID = 'lockstep-dashboard';
const COOKIE = 'lockstep_dashboard';
const SESSION_MS = 8 * 3_600_000;
const SCANS_SHOWN = 50;

interface Session {
  readonly sub: string;
  readonly expiresAt: number;
}
interface Login {
  readonly verifier: string;
  readonly state: string;
  readonly at: number;
}

export interface DashboardOptions {
  readonly store: ControlPlaneStore;
  /** The version each service should enforce (drift), from the policy service. */
  readonly expectedPolicyVersion?: (service: string) => Promise<string | null>;
  /** The resource the identity provider issues access tokens for (roles travel in them). */
  readonly resource: string;
}

/** The entry for `key`, made by `fresh` on first use. */
function entryOf<V>(map: Map<string, V>, key: string, fresh: () => V): V {
  let entry = map.get(key);
  if (entry === undefined) map.set(key, (entry = fresh()));
  return entry;
}

export function createDashboard(
  options: DashboardOptions,
): (app: FastifyInstance, context: ExtensionContext) => ExtensionHooks {
  const sessions = new Map<string, Session>();
  const logins = new Map<string, Login>();

  return (app, context) => {
    const redirectUri = () => `${context.url()}/dashboard/callback`;
    const cookies = (request: FastifyRequest) =>
      Object.fromEntries(
        String(request.headers.cookie ?? '')
          .split(';')
          .map((part) => part.trim().split('='))
          .filter((pair) => pair.length === 2) as [string, string][],
      );
    const sessionOf = (request: FastifyRequest): Session | null => {
      const id = cookies(request)[COOKIE];
      const session = id === undefined ? undefined : sessions.get(id);
      if (session === undefined || session.expiresAt < Date.now()) return null;
      return session;
    };
    const page = (reply: FastifyReply, status: number, title: string, message: string) =>
      reply
        .code(status)
        .headers({
          'content-type': 'text/html; charset=utf-8',
          'content-security-policy': "default-src 'none'; frame-ancestors 'none'",
          'x-content-type-options': 'nosniff',
          'cache-control': 'no-store',
        })
        .send(
          `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${title} · Lockstep</title></head><body><main><h1>${title}</h1><p>${message}</p></main></body></html>`,
        );

    app.get('/dashboard/login', async (_request, reply) => {
      const idp = context.idp();
      if (idp === null)
        return page(
          reply,
          503,
          'No identity provider',
          'This control plane runs without its identity provider, so nobody can sign in to the dashboard.',
        );
      const login: Login = {
        verifier: randomBytes(32).toString('base64url'),
        state: randomBytes(16).toString('base64url'),
        at: Date.now(),
      };
      logins.set(login.state, login);
      for (const [state, entry] of logins) if (Date.now() - entry.at > 10 * 60_000) logins.delete(state);
      const url = new URL(`${idp.issuer}/auth`);
      for (const [name, value] of Object.entries({
        client_id: DASHBOARD_CLIENT_ID,
        response_type: 'code',
        redirect_uri: redirectUri(),
        scope: 'openid',
        state: login.state,
        resource: options.resource,
        code_challenge: createHash('sha256').update(login.verifier).digest('base64url'),
        code_challenge_method: 'S256',
      }))
        url.searchParams.set(name, value);
      return reply.redirect(url.href, 303);
    });

    app.get<{ Querystring: { code?: string; state?: string } }>('/dashboard/callback', async (request, reply) => {
      const idp = context.idp();
      const login = request.query.state === undefined ? undefined : logins.get(request.query.state);
      if (login !== undefined) logins.delete(login.state);
      if (idp === null || login === undefined || request.query.code === undefined)
        return page(reply, 400, 'Sign-in expired', 'Open the dashboard again to sign in.');
      // The control plane redeems the code at its own identity provider, over its own TLS.
      const agent = controlPlaneAgent(context.ca.trustDomain, { ca: context.ca.bundlePem });
      let accessToken: string;
      try {
        const response = await httpRequest(`${idp.issuer}/token`, {
          method: 'POST',
          dispatcher: agent,
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body: new URLSearchParams({
            grant_type: 'authorization_code',
            client_id: DASHBOARD_CLIENT_ID,
            code: request.query.code,
            redirect_uri: redirectUri(),
            code_verifier: login.verifier,
            resource: options.resource,
          }).toString(),
        });
        const body = (await response.body.json()) as { access_token?: string };
        if (response.statusCode !== 200 || typeof body.access_token !== 'string')
          return page(reply, 400, 'Sign-in failed', 'Open the dashboard again to sign in.');
        accessToken = body.access_token;
      } finally {
        await agent.close();
      }
      const { payload } = await jwtVerify(accessToken, createLocalJWKSet(idp.publicJwks()), {
        issuer: idp.issuer,
        audience: options.resource,
        typ: 'at+jwt',
      });
      const roles = Array.isArray(payload.roles) ? payload.roles : [];
      if (!roles.includes('admin'))
        return page(
          reply,
          403,
          'Administrators only',
          `You are signed in as ${String(payload.sub).replace(/[<>&"']/g, '')}, who does not hold the role admin.`,
        );
      const id = randomBytes(32).toString('base64url');
      sessions.set(id, { sub: String(payload.sub), expiresAt: Date.now() + SESSION_MS });
      return reply
        .header(
          'set-cookie',
          `${COOKIE}=${id}; Path=/dashboard; HttpOnly; Secure; SameSite=Lax; Max-Age=${SESSION_MS / 1000}`,
        )
        .redirect('/dashboard', 303);
    });

    // The page: three fixed files read once, nothing else from disk, nothing from elsewhere.
    const assets = Object.fromEntries(
      (
        [
          ['index.html', 'text/html; charset=utf-8'],
          ['app.js', 'text/javascript; charset=utf-8'],
          ['app.css', 'text/css; charset=utf-8'],
        ] as const
      ).map(([file, type]) => [file, { type, body: readFileSync(new URL(`../dashboard/${file}`, import.meta.url)) }]),
    );
    const headers = {
      'content-security-policy':
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
      'x-content-type-options': 'nosniff',
      'referrer-policy': 'no-referrer',
      'cache-control': 'no-store',
    };
    app.get('/dashboard', async (request, reply) => {
      if (sessionOf(request) === null) return reply.redirect('/dashboard/login', 303);
      const index = assets['index.html'] as { type: string; body: Buffer };
      return reply.headers(headers).type(index.type).send(index.body);
    });
    for (const file of ['app.js', 'app.css'] as const) {
      const asset = assets[file] as { type: string; body: Buffer };
      app.get(`/dashboard/${file}`, async (_request, reply) =>
        reply.headers(headers).type(asset.type).send(asset.body),
      );
    }

    app.register(async (api) => {
      api.addHook('onRequest', async (request, reply) => {
        if (sessionOf(request) === null)
          return reply.code(401).send({ error: 'LOGIN_REQUIRED', login: '/dashboard/login' });
        reply.header('cache-control', 'no-store');
        return undefined;
      });
      api.get('/dashboard/api/overview', async () => {
        const now = Date.now();
        const services = await options.store.services();
        // Deny rate over each guard's newest real requests. A connection that never became a request
        // (a failed TLS handshake, bytes that are not HTTP: no caller, no method) is counted on its
        // own, as is a scanner's probe.
        const rates = new Map<string, { denied: number; total: number; probes: number; connections: number }>();
        const rateOf = (source: string) => {
          return entryOf(rates, source, () => ({ denied: 0, total: 0, probes: 0, connections: 0 }));
        };
        const { real, probes } = await recentDecisions(options.store);
        for (const { source, event } of real) {
          const rate = rateOf(source);
          if (event.method === '') rate.connections += 1;
          else {
            rate.total += 1;
            if (event.decision === 'deny') rate.denied += 1;
          }
        }
        for (const { source } of probes) rateOf(source).probes += 1;
        return {
          services: await Promise.all(
            services.map(async (service) => {
              const expected = (await options.expectedPolicyVersion?.(service.service)) ?? null;
              return {
                service: service.service,
                spiffeId: service.spiffeId,
                mode: service.mode,
                mtls: true,
                policyVersion: service.policyVersion,
                expectedPolicyVersion: expected,
                drift: expected !== null && expected !== service.policyVersion,
                svidExpiresAt: new Date(service.svidExpiresAt).toISOString(),
                stale: now - service.lastSeen > 60_000,
                routes: service.routes.length,
                guardVersion: service.guardVersion,
                denyRate: (() => {
                  const rate = rates.get(service.spiffeId);
                  return rate === undefined || rate.total === 0 ? null : rate.denied / rate.total;
                })(),
                decisions: rates.get(service.spiffeId)?.total ?? 0,
                refusedConnections: rates.get(service.spiffeId)?.connections ?? 0,
                probes: rates.get(service.spiffeId)?.probes ?? 0,
              };
            }),
          ),
        };
      });
      api.get('/dashboard/api/session', async (request) => ({ sub: sessionOf(request)?.sub ?? null }));
      // The service graph: who called whom in the newest real decisions, allowed and denied.
      api.get('/dashboard/api/graph', async () => {
        const edges = new Map<string, { from: string; to: string; allowed: number; denied: number }>();
        const services = new Set((await options.store.services()).map((service) => service.service));
        for (const { event } of (await recentDecisions(options.store)).real) {
          const from = typeof event.caller === 'string' ? parseSpiffeId(event.caller)?.service : null;
          if (from === null || from === undefined || typeof event.service !== 'string') continue;
          const key = `${from}→${event.service}`;
          const edge = edges.get(key) ?? { from, to: event.service, allowed: 0, denied: 0 };
          if (event.decision === 'deny') edge.denied += 1;
          else edge.allowed += 1;
          edges.set(key, edge);
        }
        return { services: [...services], edges: [...edges.values()] };
      });
      api.get('/dashboard/api/alerts', async () => ({
        alerts: (await options.store.alerts(200)).map((alert) => ({
          ...alert,
          details: JSON.parse(alert.details) as unknown,
        })),
      }));
      // The page's filter form is lenient: an empty field is no filter; an unknown value matches nothing.
      api.get<{ Querystring: Record<string, unknown> }>('/dashboard/api/events', async (request) => {
        const filter: Partial<Record<(typeof EVENT_FILTERS)[number], string>> = {};
        for (const name of EVENT_FILTERS) {
          const value = request.query[name];
          if (typeof value === 'string' && value !== '') filter[name] = value;
        }
        return { events: await newestEvents(options.store, { filter, limit: MAX_EVENTS, probes: false }) };
      });
      // A scanner's probes, apart: how many per service and per scanner, and the newest of them.
      api.get('/dashboard/api/probes', async () => {
        const { probes } = await recentDecisions(options.store);
        const byService = new Map<string, { service: string; probes: number; denied: number; admitted: number }>();
        const byScanner = new Map<string, { scanner: string; probes: number; last: string }>();
        for (const { event } of probes) {
          const service = String(event.service);
          const counts = entryOf(byService, service, () => ({ service, probes: 0, denied: 0, admitted: 0 }));
          counts.probes += 1;
          counts[event.decision === 'deny' ? 'denied' : 'admitted'] += 1;
          const scanner = scannerOf(event) ?? 'unknown';
          const seen = entryOf(byScanner, scanner, () => ({ scanner, probes: 0, last: '' }));
          seen.probes += 1;
          if (String(event.time) > seen.last) seen.last = String(event.time);
        }
        const events = probes.map(({ event }) => event).sort((a, b) => String(b.time).localeCompare(String(a.time)));
        return {
          total: probes.length,
          services: [...byService.values()].sort((a, b) => a.service.localeCompare(b.service)),
          scanners: [...byScanner.values()].sort((a, b) => b.last.localeCompare(a.last)),
          events: events.slice(0, 500),
        };
      });
      api.get<{ Params: { txn: string } }>('/dashboard/api/txn/:txn', async (request) =>
        callChain(options.store, request.params.txn),
      );
      api.get('/dashboard/api/scans', async () => ({
        scans: (await options.store.scans(SCANS_SHOWN)).map((run) => {
          const summary = JSON.parse(run.summary) as ScanSummaryCounts;
          return {
            runId: run.runId,
            scanner: run.scanner,
            startedAt: new Date(run.startedAt).toISOString(),
            durationMs: run.finishedAt - run.startedAt,
            exitCode: run.exitCode,
            status: scanStatus(summary, run.exitCode),
            summary,
            receivedAt: new Date(run.receivedAt).toISOString(),
          };
        }),
      }));
      api.get<{ Params: { runId: string } }>('/dashboard/api/scans/:runId', async (request, reply) => {
        const run = await options.store.scan(request.params.runId);
        if (run === null) return reply.code(404).send({ error: 'SCAN_NOT_FOUND' });
        const summary = JSON.parse(run.summary) as ScanSummaryCounts;
        return {
          runId: run.runId,
          scanner: run.scanner,
          status: scanStatus(summary, run.exitCode),
          receivedAt: new Date(run.receivedAt).toISOString(),
          report: JSON.parse(run.report) as unknown,
        };
      });
    });

    // The dashboard signs in as a public client of the identity provider: PKCE, no secret.
    return {
      idpClients: (url) => [
        {
          client_id: DASHBOARD_CLIENT_ID,
          client_name: 'Lockstep dashboard',
          token_endpoint_auth_method: 'none',
          redirect_uris: [`${url}/dashboard/callback`],
        },
      ],
    };
  };
}
