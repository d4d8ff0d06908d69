/**
 * The X509-SVID leaf rules (SPIFFE X509-SVID §4, §5.2, and a bounded lifetime) over real mTLS on
 * 127.0.0.1, behind every adapter. Each client certificate is issued by the trusted CA, so TLS
 * accepts it; it breaks one rule, and the guard refuses it with 401 and its code, writes the audit
 * event, and never runs the handler (each service here counts its handler's calls). The same rules
 * hold the guard's own SVID at start-up and the servers its outbound client calls.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:https';
import express from 'express';
import Fastify from 'fastify';
import { rawTlsRequest, type IssueCertOptions } from '@lockstep/testkit';
import { GuardConfigError, type Guard, type GuardErrorCode } from '../src/index.ts';
import { lockstep } from '../src/adapters/fastify.ts';
import { lockstepExpress } from '../src/adapters/express.ts';
import { lockstepHttp } from '../src/adapters/node-http.ts';
import { adapters, guardFor, recordDecisions, TRUST_DOMAIN, world, type Adapter, type World } from './fixture.ts';

const GATEWAY = `spiffe://${TRUST_DOMAIN}/svc/gateway`;
const YEAR_MS = 365 * 86_400_000;
const INVALID: GuardErrorCode = 'LOCKSTEP_ERR_PEER_ID_INVALID';
const FOREIGN: GuardErrorCode = 'LOCKSTEP_ERR_PEER_FOREIGN_TRUST_DOMAIN';

/** One rule broken per certificate; every other property is a compliant SVID's. */
const broken: ReadonlyArray<readonly [string, IssueCertOptions, GuardErrorCode]> = [
  ['a leaf with keyCertSign', { uris: [GATEWAY], keyUsage: ['digitalSignature', 'keyCertSign'] }, INVALID],
  ['a leaf with cRLSign', { uris: [GATEWAY], keyUsage: ['digitalSignature', 'cRLSign'] }, INVALID],
  ['no key usage extension', { uris: [GATEWAY], keyUsage: [] }, INVALID],
  ['a non-critical key usage', { uris: [GATEWAY], keyUsageCritical: false }, INVALID],
  ['a SPIFFE ID with no path (spiffe://shop.test)', { uris: [`spiffe://${TRUST_DOMAIN}`] }, INVALID],
  ['a 10-year lifetime', { uris: [GATEWAY], notAfter: new Date(Date.now() + 10 * YEAR_MS) }, INVALID],
  ['two URI SANs', { uris: [GATEWAY, `spiffe://${TRUST_DOMAIN}/svc/reports`] }, INVALID],
  ['CA=true', { uris: [GATEWAY], ca: true }, INVALID],
  ['a lookalike trust domain', { uris: ['spiffe://shop.test.evil/svc/gateway'] }, FOREIGN],
];

interface Answer {
  status: number;
  text: string;
}
type Credential = { chainPem: string; keyPem: string };

/** GET /orders/7 with `token`, on a new connection presenting `cert`; the handshake must succeed. */
async function getOrder(w: World, port: number, cert: Credential, token: string): Promise<Answer> {
  const raw = `GET /orders/7 HTTP/1.1\r\nhost: orders\r\ntxn-token: ${token}\r\nconnection: close\r\n\r\n`;
  const tls = { host: '127.0.0.1', port, caPem: w.ca.bundlePem, certPem: cert.chainPem, keyPem: cert.keyPem };
  const result = await rawTlsRequest({ ...tls, raw });
  if (typeof result !== 'string') {
    throw new Error(`the TLS handshake failed (${result.error}): the rule must be the guard's to apply, not TLS's`);
  }
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(result)?.[1]);
  return { status, text: result.slice(result.indexOf('\r\n\r\n') + 4) };
}

interface CountedService {
  readonly port: number;
  /** How many times the handler ran. */
  calls(): number;
  close(): Promise<void>;
}

/** GET /orders/:id (orders:read) behind `adapter`, with a handler that counts its calls. */
async function startCounted(adapter: Adapter, guard: Guard): Promise<CountedService> {
  let calls = 0;
  const answer = () => {
    calls += 1;
    return { ok: true };
  };
  const route = { 'GET /orders/:id': { action: 'orders:read' } };
  if (adapter === 'fastify') {
    const app = Fastify({ https: guard.tlsOptions(), logger: false });
    await app.register(lockstep, { guard });
    app.get('/orders/:id', { config: { lockstep: { action: 'orders:read' } } }, async () => answer());
    await app.listen({ host: '127.0.0.1', port: 0 });
    return { port: (app.server.address() as AddressInfo).port, calls: () => calls, close: () => app.close() };
  }
  let server: Server;
  if (adapter === 'express') {
    const app = express();
    app.use(lockstepExpress(guard, route));
    app.get('/orders/:id', (_request, response) => {
      response.json(answer());
    });
    server = guard.createServer(app);
  } else {
    server = guard.createServer(
      lockstepHttp(guard, route, (_request, response) => {
        response.writeHead(200, { 'content-type': 'application/json' });
        response.end(JSON.stringify(answer()));
      }),
    );
  }
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    calls: () => calls,
    close: () => {
      server.closeAllConnections();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

for (const adapter of adapters) {
  describe(`${adapter} adapter: X509-SVID leaf rules`, () => {
    let w: World;
    let guard: Guard;
    let service: CountedService;
    let token: string;
    const decisions = recordDecisions();

    before(async () => {
      w = await world();
      guard = await guardFor(w);
      service = await startCounted(adapter, guard);
      token = await w.customerToken();
    });
    after(async () => {
      decisions.stop();
      await service.close();
      await guard.close();
    });

    const get = (cert: Credential) => getOrder(w, service.port, cert, token);

    test('legitimate: a compliant SVID from the same CA reaches the handler', async () => {
      const before = service.calls();
      const answer = await get(w.svids.gateway);
      assert.equal(answer.status, 200, answer.text);
      assert.equal(service.calls(), before + 1);
    });

    for (const [what, options, code] of broken) {
      test(`refuses ${what}: 401 ${code}, audited, handler not run`, async () => {
        const before = service.calls();
        const answer = await get(await w.ca.issueCert(options));
        assert.equal(answer.status, 401, `expected 401 ${code}, got ${answer.status}: ${answer.text.slice(0, 300)}`);
        const body = JSON.parse(answer.text) as { error: string; requestId: string };
        assert.deepEqual(Object.keys(body).sort(), ['error', 'requestId']);
        assert.equal(body.error, code);
        const event = decisions.byRequestId(body.requestId);
        assert.ok(event, `an audit event for request ${body.requestId}`);
        assert.deepEqual([event.decision, event.reason, event.dryRun], ['deny', code, false]);
        assert.equal(service.calls(), before, 'the handler never ran');
      });
    }
  });
}

describe('the maximum SVID lifetime is a guard option', () => {
  let w: World;
  before(async () => {
    w = await world();
  });

  test('svidRules.maxLifetimeSeconds lowers it: a guard that allows 30 minutes refuses a 1-hour SVID', async () => {
    // Its own SVID is held to the same limit: a 20-minute one for the guard itself.
    const own = await w.ca.issueSvid({ service: 'orders', ttlSeconds: 1_200 });
    const svid = { cert: own.chainPem, key: own.keyPem };
    const guard = await guardFor(w, { svid, svidRules: { maxLifetimeSeconds: 1_800 } });
    const service = await startCounted('http', guard);
    try {
      const answer = await getOrder(w, service.port, w.svids.gateway, await w.customerToken());
      assert.equal(answer.status, 401);
      assert.equal((JSON.parse(answer.text) as { error: string }).error, INVALID);
      assert.equal(service.calls(), 0);
    } finally {
      await service.close();
      await guard.close();
    }
  });

  test('a guard refuses to start with an own SVID that its peers would refuse', async () => {
    await assert.rejects(guardFor(w, { svidRules: { maxLifetimeSeconds: 1_800 } }), (error: Error) => {
      return error instanceof GuardConfigError && /an SVID may live at most 1800 s/.test(error.message);
    });
  });

  test('it can only be lowered, and a bad value says what to write', async () => {
    const message = /svidRules\.maxLifetimeSeconds must be an integer between 1 and 86400, e\.g\. 86400/;
    await assert.rejects(guardFor(w, { svidRules: { maxLifetimeSeconds: 10 * 86_400 } }), (error: Error) => {
      return error instanceof GuardConfigError && message.test(error.message);
    });
  });
});

describe('the guard holds its own SVID and its outbound peers to the same rules', () => {
  let w: World;
  before(async () => {
    w = await world();
  });

  for (const [what, options, rule] of [
    ['keyCertSign', { keyUsage: ['digitalSignature', 'keyCertSign'] }, /keyCertSign/],
    ['a 10-year lifetime', { notAfter: new Date(Date.now() + 10 * YEAR_MS) }, /valid for 3650 days/],
  ] as const) {
    test(`refuses to start with its own SVID carrying ${what}`, async () => {
      const own = await w.ca.issueCert({ uris: [`spiffe://${TRUST_DOMAIN}/svc/orders`], ...options });
      await assert.rejects(
        guardFor(w, { svid: { cert: own.chainPem, key: own.keyPem } }),
        (error: Error) =>
          error instanceof GuardConfigError &&
          rule.test(error.message) &&
          /svid\.cert is not an X\.509-SVID of trust domain shop\.test/.test(error.message),
      );
    });
  }

  test('the outbound client refuses a server whose SVID has no key usage, before sending anything', async () => {
    const bad = await w.ca.issueCert({ uris: [`spiffe://${TRUST_DOMAIN}/svc/payments`], keyUsage: [] });
    let reached = false;
    const app = Fastify({ https: { cert: bad.chainPem, key: bad.keyPem } });
    app.get('/charge', async () => {
      reached = true;
      return {};
    });
    await app.listen({ host: '127.0.0.1', port: 0 });
    const guard = await guardFor(w);
    try {
      const url = `https://127.0.0.1:${(app.server.address() as AddressInfo).port}/charge`;
      await assert.rejects(guard.client.request(url, { txnToken: await w.customerToken() }), (error: Error) =>
        /no key usage extension/.test(`${error.message} ${String(error.cause)}`),
      );
      assert.equal(reached, false, 'no request reached the server');
    } finally {
      await app.close();
      await guard.close();
    }
  });
});
