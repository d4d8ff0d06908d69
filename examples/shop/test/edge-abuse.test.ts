/**
 * The shop's edge under abuse, against the real shop (`startShop`: control plane and five services in
 * their own processes) on loopback. Every attack is bounded in count and time, and every assertion is
 * about outcomes: the gateway answers 503 with a request id when the control plane or a service hangs
 * (SIGSTOP), closes slow clients, answers 413 to oversized bodies, refuses before reading a body when
 * there is no session, and answers a flood of anonymous requests 429 while a signed-in user — even one
 * at the flooder's address — is served; a flood of GET /login from 10,000 addresses leaves a user's
 * sign-in in progress alone and does not push a flooder's own counter out; one user's sessions are
 * bounded. Latency under a flood is measured by bench/edge-flood.ts.
 *
 * Client addresses: loopback is 127.0.0.0/8, so the flooder (127.0.0.2), a bystander (127.0.0.3), the
 * slow clients (127.0.0.4) and a reverse proxy (127.0.0.5) each have an address, and so a budget, of their own.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Agent, request } from 'undici';
import { createTestBrowser, type TestBrowser } from '@lockstep/testkit';
import { freePortBase, startShop, type RunningShop } from '../launch.ts';
import { edgeLimits } from '../services/edge-limits.ts';

// Shorter client timeouts than the defaults (10 s, 15 s), to keep the test short; the outbound deadline
// is the default, 5 s. One trusted reverse proxy, 127.0.0.5. The gateway inherits this environment from startShop.
process.env.GATEWAY_HEADERS_TIMEOUT_MS = '3000';
process.env.GATEWAY_REQUEST_TIMEOUT_MS = '5000';
const PROXY = '127.0.0.5';
process.env.GATEWAY_TRUSTED_PROXIES = PROXY;
// Two sessions a user, to see the third sign the first out without signing in eleven times.
process.env.GATEWAY_SESSIONS_PER_USER = '2';
const UPSTREAM_TIMEOUT_MS = edgeLimits({}).upstreamTimeoutMs;
// Bounded, far below what was seen without deadlines (58 s) and undici's own default (300 s), with room
// for a slow machine.
const ANSWER_WITHIN_MS = UPSTREAM_TIMEOUT_MS + 15_000;
const REQUEST_ID = /^[0-9a-f-]{36}$/;

const dataDir = mkdtempSync(join(tmpdir(), 'lockstep-edge-abuse-'));
let shop: RunningShop;
let port: number;

before(async () => {
  shop = await startShop({ dataDir, portBase: await freePortBase() });
  port = Number(new URL(shop.urls.gateway).port);
});
after(async () => {
  await shop?.stop();
  rmSync(dataDir, { recursive: true, force: true });
});

function browser(): TestBrowser {
  return createTestBrowser({ ca: readFileSync(join(dataDir, 'bundle.pem'), 'utf8') });
}

async function signedIn(user: string): Promise<{ browser: TestBrowser; csrf: string; cookie: string }> {
  const session = browser();
  const login = await session.open(`${shop.urls.gateway}/login`);
  const done = await session.submit(login, { username: user, password: shop.users[user]?.password ?? '' });
  assert.equal(done.url, `${shop.urls.gateway}/`, `${user} is back at the shop after signing in`);
  const answer = await session.request(`${shop.urls.gateway}/api/session`);
  assert.equal(answer.status, 200);
  const id = session.cookies(new URL(shop.urls.gateway).host).shop_session;
  assert.ok(id);
  return { browser: session, csrf: (answer.body as { csrf: string }).csrf, cookie: `shop_session=${id}` };
}

async function eventually<T>(read: () => Promise<T | undefined>, what: string, withinMs = 30_000): Promise<T> {
  const started = Date.now();
  for (;;) {
    const value = await read().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() - started > withinMs) return assert.fail(`${what}: not within ${withinMs / 1000} s`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

interface RawOutcome {
  /** The status line's code, or 0 when no answer came. */
  readonly status: number;
  readonly head: string;
  readonly body: string;
  /** Body bytes written before the answer came (or the socket closed). */
  readonly bodyBytesSent: number;
  /** The server closed the connection (within `closeWithinMs` of its answer). */
  readonly closedByServer: boolean;
  readonly elapsedMs: number;
}

/**
 * One request over a plain socket from `from`: writes `head`, then body chunks of `chunk` bytes every
 * `everyMs` until `bodyBytes` are written, the answer comes or the socket closes. Then waits for the
 * server to close, at most `closeWithinMs`.
 */
function rawRequest(options: {
  from: string;
  head: string;
  bodyBytes?: number;
  chunk?: number;
  everyMs?: number;
  closeWithinMs?: number;
  giveUpMs?: number;
}): Promise<RawOutcome> {
  const {
    from,
    head,
    bodyBytes = 0,
    chunk = 16 * 1024,
    everyMs = 50,
    closeWithinMs = 10_000,
    giveUpMs = 30_000,
  } = options;
  const started = performance.now();
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port, localAddress: from });
    let received = '';
    let sent = 0;
    let sentAtAnswer: number | null = null;
    let dripping: NodeJS.Timeout | undefined;
    let waiting: NodeJS.Timeout | undefined;
    let closedByUs = false;
    const close = () => {
      closedByUs = true;
      socket.destroy();
    };
    const giveUp = setTimeout(close, giveUpMs);
    const write = () => {
      if (socket.destroyed || sentAtAnswer !== null || sent >= bodyBytes) return;
      const size = Math.min(chunk, bodyBytes - sent);
      sent += size;
      socket.write(Buffer.alloc(size, 0x20));
      dripping = setTimeout(write, everyMs);
    };
    socket.on('connect', () => {
      socket.write(head);
      write();
    });
    socket.on('data', (data) => {
      received += data.toString('latin1');
      if (sentAtAnswer === null && received.includes('\r\n\r\n')) {
        sentAtAnswer = sent;
        clearTimeout(dripping);
        clearTimeout(giveUp);
        // The server should close by itself; if it does not, we stop waiting.
        waiting = setTimeout(close, closeWithinMs);
      }
    });
    // A reset after the answer (the server closed with our unsent bytes in flight) is the server closing.
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(giveUp);
      clearTimeout(dripping);
      clearTimeout(waiting);
      const [answerHead = '', ...body] = received.split('\r\n\r\n');
      resolve({
        status: Number(/^HTTP\/1\.1 (\d{3})/.exec(answerHead)?.[1] ?? 0),
        head: answerHead.toLowerCase().replaceAll('\r\n', '\n'),
        body: body.join('\r\n\r\n'),
        bodyBytesSent: sentAtAnswer ?? sent,
        closedByServer: !closedByUs,
        elapsedMs: performance.now() - started,
      });
    });
  });
}

function postHead(path: string, length: number, headers: Record<string, string> = {}): string {
  const lines = Object.entries({
    host: `localhost:${port}`,
    'content-type': 'application/json',
    'content-length': String(length),
    ...headers,
  }).map(([name, value]) => `${name}: ${value}`);
  return `POST ${path} HTTP/1.1\r\n${lines.join('\r\n')}\r\n\r\n`;
}

describe("the edge's limits (read from the environment at start-up)", () => {
  it('defaults to bounded waits and budgets', () => {
    const limits = edgeLimits({});
    assert.deepEqual(
      { ...limits },
      {
        upstreamTimeoutMs: 5_000,
        headersTimeoutMs: 10_000,
        requestTimeoutMs: 15_000,
        keepAliveTimeoutMs: 5_000,
        anonymousPerMinute: 300,
        signInPerMinute: 20,
        sessionPerMinute: 300,
        rateKeys: 100_000,
        sessionsPerUser: 10,
        sessionsMax: 20_000,
        trustedProxies: false,
      },
    );
    assert.ok(Object.isFrozen(limits));
  });

  it('refuses a bad value with what to write instead', () => {
    assert.throws(
      () => edgeLimits({ GATEWAY_UPSTREAM_TIMEOUT_MS: '0' }),
      /GATEWAY_UPSTREAM_TIMEOUT_MS must be a whole number from 100 to 60000, e\.g\. GATEWAY_UPSTREAM_TIMEOUT_MS=5000; got "0"/,
    );
    assert.throws(
      () => edgeLimits({ GATEWAY_RATE_ANONYMOUS: 'lots' }),
      /GATEWAY_RATE_ANONYMOUS must be a whole number/,
    );
    assert.throws(
      () => edgeLimits({ GATEWAY_HEADERS_TIMEOUT_MS: '20000', GATEWAY_REQUEST_TIMEOUT_MS: '10000' }),
      /must not exceed GATEWAY_REQUEST_TIMEOUT_MS/,
    );
    assert.throws(
      () => edgeLimits({ GATEWAY_TRUSTED_PROXIES: '10.0.0.0/99' }),
      /"10\.0\.0\.0\/99" is not an address, a CIDR/,
    );
    assert.throws(() => edgeLimits({ GATEWAY_TRUSTED_PROXIES: '*' }), /GATEWAY_TRUSTED_PROXIES/);
    assert.deepEqual(edgeLimits({ GATEWAY_TRUSTED_PROXIES: '10.0.0.5, 10.1.0.0/16,loopback,::1' }).trustedProxies, [
      '10.0.0.5',
      '10.1.0.0/16',
      'loopback',
      '::1',
    ]);
  });
});

describe("the shop's edge under abuse", () => {
  let alice: Awaited<ReturnType<typeof signedIn>>;

  it('answers 413 to a body larger than the route takes, never 500, and closes the connection', async () => {
    alice = await signedIn('alice');
    const tooBig = await alice.browser.request(`${shop.urls.gateway}/api/orders`, {
      method: 'POST',
      json: { item: 'tea', quantity: 1, note: 'x'.repeat(5_000) },
      headers: { 'x-csrf-token': alice.csrf },
    });
    assert.equal(tooBig.status, 413);
    assert.equal((tooBig.body as { error: string }).error, 'BODY_TOO_LARGE');
    assert.match(
      String((tooBig.body as { message: string }).message),
      /POST \/api\/orders takes a body of at most 4096 bytes/,
    );
    assert.match(String((tooBig.body as { requestId: string }).requestId), REQUEST_ID);

    // Without a Content-Length (chunked), refused as soon as it grows past the limit; and to a path that is no route.
    const chunked = await rawRequest({
      from: '127.0.0.1',
      bodyBytes: 16 * 1024,
      head: `POST /api/orders HTTP/1.1\r\nhost: localhost:${port}\r\ncookie: ${alice.cookie}\r\nx-csrf-token: ${alice.csrf}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n${(16 * 1024).toString(16)}\r\n`,
    });
    assert.equal(chunked.status, 413, chunked.head);
    assert.equal(chunked.closedByServer, true);
    const unknown = await rawRequest({
      from: '127.0.0.1',
      head: postHead('/no-such-route', 1_000_000),
      bodyBytes: 1_000_000,
    });
    assert.equal(unknown.status, 413, unknown.head);
    assert.ok(unknown.bodyBytesSent < 1_000_000, `answered after ${unknown.bodyBytesSent} of 1,000,000 bytes`);
    assert.equal(unknown.closedByServer, true);
  });

  it('refuses a state-changing call without a session before reading its body (1 MB to POST /logout)', async () => {
    for (const path of ['/logout', '/api/orders']) {
      // 16 KiB of a declared 1 MB, then nothing more until the answer: the answer cannot have waited for the body.
      const outcome = await rawRequest({ from: '127.0.0.1', head: postHead(path, 1_048_576), bodyBytes: 16 * 1024 });
      assert.equal(outcome.status, 401, `${path}: ${outcome.head}`);
      assert.match(outcome.body, /"error":"LOGIN_REQUIRED"/);
      assert.match(outcome.head, /^connection: close$/m, `${path}: the rest of the body is not drained`);
      assert.equal(outcome.bodyBytesSent, 16 * 1024);
      assert.equal(outcome.closedByServer, true, `${path}: the server closed the connection`);
    }
    // Also while the client keeps sending: the answer comes long before 1 MB has gone out.
    const streaming = await rawRequest({
      from: '127.0.0.1',
      head: postHead('/logout', 1_048_576),
      bodyBytes: 1_048_576,
      chunk: 8 * 1024,
      everyMs: 20,
    });
    assert.equal(streaming.status, 401);
    assert.ok(streaming.bodyBytesSent < 1_048_576, `answered after ${streaming.bodyBytesSent} bytes`);
    assert.equal(streaming.closedByServer, true);

    // A body that is not even JSON: the session is checked first (401, not 400).
    const garbage = await request(`http://127.0.0.1:${port}/logout`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{not json',
    });
    assert.equal(garbage.statusCode, 401);
    await garbage.body.dump();

    // With a session, the CSRF token and the Origin are checked before the body too.
    const noCsrf = await rawRequest({
      from: '127.0.0.1',
      head: postHead('/api/orders', 1_048_576, { cookie: alice.cookie }),
      bodyBytes: 16 * 1024,
    });
    assert.equal(noCsrf.status, 403);
    assert.match(noCsrf.body, /CSRF_TOKEN_INVALID/);
    assert.equal(noCsrf.closedByServer, true);
    const foreign = await alice.browser.request(`${shop.urls.gateway}/api/orders`, {
      method: 'POST',
      json: { item: 'tea', quantity: 1 },
      headers: { 'x-csrf-token': alice.csrf, origin: 'https://evil.example' },
    });
    assert.equal(foreign.status, 403);
    assert.equal((foreign.body as { error: string }).error, 'ORIGIN_REFUSED');
  });

  it('signs out as the page does it: POST /logout with the CSRF token and no body', async () => {
    const bob = await signedIn('bob');
    try {
      const out = await bob.browser.request(`${shop.urls.gateway}/logout`, {
        method: 'POST',
        headers: { 'x-csrf-token': bob.csrf, origin: new URL(shop.urls.gateway).origin },
      });
      assert.equal(out.status, 200, JSON.stringify(out.body));
      assert.equal((await bob.browser.request(`${shop.urls.gateway}/api/session`)).status, 401, 'the session is over');
    } finally {
      await bob.browser.close();
    }
  });

  it('closes slow clients: headers a byte at a time, a body that trickles, a connection that says nothing', async () => {
    const from = '127.0.0.4';
    // A header value (or a body) a byte every 500 ms: 1,000 bytes would take 500 s; we give up after 30 s.
    const trickle = { from, bodyBytes: 1_000, chunk: 1, everyMs: 500 };
    const [headers, body, idle] = await Promise.all([
      rawRequest({ ...trickle, head: `GET / HTTP/1.1\r\nhost: localhost:${port}\r\nx-slow: ` }),
      rawRequest({
        ...trickle,
        head: postHead('/api/orders', 1_000, { cookie: alice.cookie, 'x-csrf-token': alice.csrf }),
      }),
      rawRequest({ from, head: '' }),
    ]);
    console.log(
      `slow clients closed after ${[headers, body, idle].map((outcome) => `${(outcome.elapsedMs / 1000).toFixed(1)} s`).join(', ')} (headers 3 s, request 5 s, checked every 1 s)`,
    );
    for (const [what, outcome] of [
      ['slow headers', headers],
      ['slow body', body],
      ['idle', idle],
    ] as const) {
      assert.equal(outcome.closedByServer, true, `${what}: closed by the server, not by our 30 s give-up`);
      assert.ok(outcome.status === 408 || outcome.status === 0, `${what}: ${outcome.head}`);
    }
    assert.ok(
      headers.bodyBytesSent < 1_000 && body.bodyBytesSent < 1_000,
      'both were still coming when they were cut off',
    );
  });

  it('answers 503 with a request id by the deadline when the control plane hangs (SIGSTOP), and recovers', async () => {
    // A keep-alive connection to the control plane exists: this call made it.
    assert.equal((await alice.browser.request(`${shop.urls.gateway}/api/orders`)).status, 200);
    const signingIn = browser();
    try {
      // A sign-in that reached the callback: redeeming its code is the gateway's call to the control plane.
      const login = await signingIn.open(`${shop.urls.gateway}/login`);
      const atCallback = await signingIn.submit(
        login,
        { username: 'ops', password: shop.users.ops?.password ?? '' },
        { stopAt: (url) => url.pathname === '/callback' },
      );
      assert.match(atCallback.url, /\/callback\?/);

      shop.signal('controlPlane', 'SIGSTOP');
      try {
        let started = performance.now();
        const api = await alice.browser.request(`${shop.urls.gateway}/api/orders`);
        const apiMs = performance.now() - started;
        assert.equal(api.status, 503);
        assert.equal((api.body as { error: string }).error, 'CONTROL_PLANE_UNAVAILABLE');
        assert.match(String((api.body as { requestId: string }).requestId), REQUEST_ID);
        assert.ok(apiMs < ANSWER_WITHIN_MS, `answered after ${apiMs.toFixed(0)} ms`);

        started = performance.now();
        const callback = await signingIn.open(atCallback.url);
        const callbackMs = performance.now() - started;
        assert.equal(callback.status, 503);
        assert.match(callback.body, /did not answer in time.*\(request [0-9a-f-]{36}\)/);
        assert.ok(callbackMs < ANSWER_WITHIN_MS, `answered after ${callbackMs.toFixed(0)} ms`);
        console.log(
          `control plane stopped: the API call answered 503 after ${(apiMs / 1000).toFixed(1)} s, the sign-in callback after ${(callbackMs / 1000).toFixed(1)} s (deadline ${UPSTREAM_TIMEOUT_MS / 1000} s)`,
        );
      } finally {
        shop.signal('controlPlane', 'SIGCONT');
      }
      // The timed-out connection is not reused: the next calls are served.
      await eventually(
        async () =>
          (await alice.browser.request(`${shop.urls.gateway}/api/orders`)).status === 200 ? true : undefined,
        'served again after SIGCONT',
      );
    } finally {
      await signingIn.close();
    }
  });

  it('answers 503 with a request id by the deadline when a service hangs (SIGSTOP orders)', async () => {
    shop.signal('orders', 'SIGSTOP');
    try {
      const started = performance.now();
      const answer = await alice.browser.request(`${shop.urls.gateway}/api/orders`);
      const elapsed = performance.now() - started;
      assert.equal(answer.status, 503);
      assert.deepEqual(Object.keys(answer.body as object).sort(), ['error', 'requestId', 'service']);
      assert.equal((answer.body as { error: string; service: string }).error, 'SERVICE_UNAVAILABLE');
      assert.equal((answer.body as { service: string }).service, 'orders');
      assert.ok(elapsed < ANSWER_WITHIN_MS, `answered after ${elapsed.toFixed(0)} ms`);
      // The catalogue (inventory) is still served meanwhile.
      assert.equal((await alice.browser.request(`${shop.urls.gateway}/api/items`)).status, 200);
    } finally {
      shop.signal('orders', 'SIGCONT');
    }
    await eventually(
      async () => ((await alice.browser.request(`${shop.urls.gateway}/api/orders`)).status === 200 ? true : undefined),
      'orders served again after SIGCONT',
    );
  });

  it('answers a flood of anonymous requests 429 while a signed-in user at the same address is served', async () => {
    const flooder = '127.0.0.2';
    const bystander = '127.0.0.3';
    const { anonymousPerMinute } = edgeLimits({});
    const floodAgent = new Agent({ localAddress: flooder, pipelining: 1 });
    const aliceAgent = new Agent({ localAddress: flooder });
    const statuses = new Map<number | string, number>();
    const count = (status: number | string) => statuses.set(status, (statuses.get(status) ?? 0) + 1);
    let retryAfterMissing = 0;
    const PER_CLIENT = 400;
    const deadline = Date.now() + 20_000;
    let flooding = true;
    try {
      // Four clients, 400 requests each at most (the uploaders 100), 20 s at most. Two send anonymous GETs with a made-up session
      // cookie and a spoofed X-Forwarded-For (random, or the bystander's address: neither is believed);
      // two send 256 KiB to POST /logout without a session.
      const gets = async () => {
        for (let i = 0; i < PER_CLIENT && Date.now() < deadline; i += 1) {
          const spoofed = i % 2 === 0 ? bystander : `10.${i % 250}.${(i * 7) % 250}.${(i * 13) % 250}`;
          const path = ['/api/orders', '/', '/api/session', '/no-such-route'][i % 4] as string;
          const answer = await request(`http://127.0.0.1:${port}${path}`, {
            dispatcher: floodAgent,
            headers: { 'x-forwarded-for': spoofed, cookie: `shop_session=${randomBytes(32).toString('base64url')}` },
          });
          await answer.body.dump();
          count(answer.statusCode);
          if (answer.statusCode === 429 && !(Number(answer.headers['retry-after']) >= 1)) retryAfterMissing += 1;
        }
      };
      const uploads = async () => {
        for (let i = 0; i < PER_CLIENT / 4 && Date.now() < deadline; i += 1) {
          const outcome = await rawRequest({
            from: flooder,
            head: postHead('/logout', 256 * 1024),
            bodyBytes: 256 * 1024,
            chunk: 64 * 1024,
            everyMs: 0,
            closeWithinMs: 5_000,
          });
          count(outcome.status === 0 ? 'no answer' : outcome.status);
          if (outcome.status === 429 && !/^retry-after: [1-9]\d*$/m.test(outcome.head)) retryAfterMissing += 1;
        }
      };
      // Alice, meanwhile, from the flooder's address: every call of hers must succeed.
      const aliceOutcomes: number[] = [];
      const aliceCalls = async () => {
        for (let i = 0; (flooding || i < 10) && i < 60; i += 1) {
          const path = i % 2 === 0 ? '/api/orders' : '/api/items';
          const answer = await request(`http://127.0.0.1:${port}${path}`, {
            dispatcher: aliceAgent,
            headers: { cookie: alice.cookie },
          });
          await answer.body.dump();
          aliceOutcomes.push(answer.statusCode);
        }
        const placed = await request(`http://127.0.0.1:${port}/api/orders`, {
          method: 'POST',
          dispatcher: aliceAgent,
          headers: { cookie: alice.cookie, 'x-csrf-token': alice.csrf, 'content-type': 'application/json' },
          body: JSON.stringify({ item: 'tea', quantity: 1 }),
        });
        await placed.body.dump();
        aliceOutcomes.push(placed.statusCode);
      };
      const alicesTurn = aliceCalls();
      await Promise.all([gets(), gets(), uploads(), uploads()]);
      flooding = false;
      await alicesTurn;

      const summary = JSON.stringify(Object.fromEntries(statuses));
      console.log(
        `flood from ${flooder}: ${summary}; alice, at the same address, meanwhile: ${aliceOutcomes.length} calls, statuses ${[...new Set(aliceOutcomes)].join(', ')}`,
      );
      const answered = [...statuses].reduce((sum, [status, n]) => (typeof status === 'number' ? sum + n : sum), 0);
      const served = answered - (statuses.get(429) ?? 0);
      assert.ok((statuses.get(429) ?? 0) > 0, `the flooder got 429s: ${summary}`);
      // At most its address's budget got past the limiter (and the few this address spent before: none).
      assert.ok(
        served <= anonymousPerMinute,
        `at most ${anonymousPerMinute} flood requests were handled past the limiter: ${summary}`,
      );
      assert.equal(retryAfterMissing, 0, 'every 429 says when to retry');
      assert.deepEqual(
        [...statuses.keys()].filter((status) => typeof status === 'number' && status >= 500),
        [],
        `no 5xx: ${summary}`,
      );
      assert.ok(aliceOutcomes.length >= 11);
      assert.deepEqual(
        aliceOutcomes.filter((status) => status !== 200 && status !== 201),
        [],
        'every call of the signed-in user succeeded',
      );
      assert.equal(aliceOutcomes.at(-1), 201, 'and her order was placed');

      // The bystander, whose address the flood named in X-Forwarded-For, has its own budget.
      const bystanderAgent = new Agent({ localAddress: bystander });
      try {
        const answer = await request(`http://127.0.0.1:${port}/api/session`, { dispatcher: bystanderAgent });
        await answer.body.dump();
        assert.equal(answer.statusCode, 401, 'the bystander is asked to sign in, not rate limited');
      } finally {
        await bystanderAgent.close();
      }
    } finally {
      flooding = false;
      await floodAgent.close();
      await aliceAgent.close();
    }
  });

  it("behind the trusted proxy, budgets follow X-Forwarded-For: a client flooding through it does not use up the others' budget", async () => {
    const { anonymousPerMinute } = edgeLimits({});
    const proxy = new Agent({ localAddress: PROXY });
    const through = async (forwardedFor: string) => {
      const answer = await request(`http://127.0.0.1:${port}/api/session`, {
        dispatcher: proxy,
        headers: { 'x-forwarded-for': forwardedFor },
      });
      await answer.body.dump();
      return answer.statusCode;
    };
    try {
      const flooder: number[] = [];
      for (let i = 0; i < anonymousPerMinute + 20; i += 1) flooder.push(await through('198.51.100.7'));
      assert.deepEqual(
        flooder.slice(0, anonymousPerMinute).filter((status) => status !== 401),
        [],
        'its budget first',
      );
      assert.deepEqual(new Set(flooder.slice(anonymousPerMinute)), new Set([429]), 'then 429');
      // The proxy appends the address it saw; what the client wrote before it is not believed.
      assert.equal(
        await through('203.0.113.9, 198.51.100.7'),
        429,
        'a made-up address in front does not buy a fresh budget',
      );
      assert.equal(await through('198.51.100.8'), 401, 'another client behind the same proxy has its own budget');
    } finally {
      await proxy.close();
    }
  });

  it('keeps a sign-in in progress in the browser: an encrypted, HttpOnly, SameSite=Lax cookie of 10 minutes, refused when altered', async () => {
    const started = await request(`http://127.0.0.1:${port}/login`);
    await started.body.dump();
    assert.equal(started.statusCode, 303);
    const setCookie = String(started.headers['set-cookie']);
    const state = new URL(String(started.headers.location)).searchParams.get('state') ?? '';
    const value = /^shop_login=([^;]+)/.exec(setCookie)?.[1] ?? '';
    // A JWE with a direct key (no encrypted key): header..iv.ciphertext.tag; nothing of the sign-in in clear.
    assert.match(value, /^[\w-]+\.\.[\w-]+\.[\w-]+\.[\w-]+$/, setCookie);
    assert.ok(
      state.length > 0 &&
        !value.includes(state) &&
        !Buffer.from(value.split('.')[3] ?? '', 'base64url')
          .toString('latin1')
          .includes(state),
    );
    for (const attribute of [/; Max-Age=600(;|$)/, /; Path=\/(;|$)/, /; HttpOnly(;|$)/, /; SameSite=Lax(;|$)/])
      assert.match(setCookie, attribute);

    const [header = '', , iv = '', ciphertext = '', tag = ''] = value.split('.');
    // One character in the middle: six bits of the ciphertext, every one of them used.
    const flipped = `${ciphertext.slice(0, 5)}${ciphertext[5] === 'A' ? 'B' : 'A'}${ciphertext.slice(6)}`;
    const callback = await request(`http://127.0.0.1:${port}/callback?code=x&state=${encodeURIComponent(state)}`, {
      headers: { cookie: `shop_login=${[header, '', iv, flipped, tag].join('.')}` },
    });
    assert.equal(callback.statusCode, 400);
    assert.match(await callback.body.text(), /^This sign-in has expired or was started in another browser/);
  });

  it("keeps a sign-in in progress through 10,001 GET /login from as many addresses, and a flooder's counter through them", async (t) => {
    const { anonymousPerMinute } = edgeLimits({});
    const proxy = new Agent({ localAddress: PROXY, connections: 8 });
    const through = async (path: string, forwardedFor: string) => {
      const answer = await request(`http://127.0.0.1:${port}${path}`, {
        dispatcher: proxy,
        headers: { 'x-forwarded-for': forwardedFor },
      });
      await answer.body.dump();
      return answer.statusCode;
    };
    const signingIn = browser();
    try {
      // A flooder spends its address's budget first...
      const flooder = '198.19.0.1';
      for (let i = 0; i < anonymousPerMinute; i += 1) await through('/api/session', flooder);
      assert.equal(await through('/api/session', flooder), 429);
      const exhaustedAt = Date.now();
      // ...bob starts to sign in...
      const login = await signingIn.open(`${shop.urls.gateway}/login`);
      // ...and 10,001 sign-ins are started from 10,001 other addresses (more than were ever kept here: 10,000;
      // more keys than a budget tracked: 5,000), one each, within every budget.
      const FLOOD = 10_001;
      let next = 0;
      const statuses = new Map<number, number>();
      const worker = async () => {
        while (next < FLOOD) {
          const i = next;
          next += 1;
          const status = await through('/login', `198.18.${i >> 8}.${i & 255}`);
          statuses.set(status, (statuses.get(status) ?? 0) + 1);
        }
      };
      const started = performance.now();
      await Promise.all(Array.from({ length: 8 }, worker));
      console.log(
        `${FLOOD} GET /login from as many addresses in ${((performance.now() - started) / 1000).toFixed(1)} s: ${JSON.stringify(Object.fromEntries(statuses))}`,
      );
      assert.deepEqual(Object.fromEntries(statuses), { 303: FLOOD }, 'each was a sign-in started');

      // Bob's sign-in, started before the flood, completes.
      const done = await signingIn.submit(login, { username: 'bob', password: shop.users.bob?.password ?? '' });
      assert.equal(done.url, `${shop.urls.gateway}/`, `bob is back at the shop: ${done.body.slice(0, 200)}`);
      assert.equal((await signingIn.request(`${shop.urls.gateway}/api/session`)).status, 200);

      // The flooder's counter was not pushed out by the 10,001 addresses after it (its window is a minute).
      const flooderAgain = await through('/api/session', flooder);
      if (Date.now() - exhaustedAt < 50_000) assert.equal(flooderAgain, 429, 'the flooder is still over its budget');
      else
        t.diagnostic(
          `the flood took over 50 s: the flooder's budget may have been renewed by its window (${flooderAgain}); not checked`,
        );
    } finally {
      await signingIn.close();
      await proxy.close();
    }
  });

  it("signs out a user's least recently used session when the user has more than GATEWAY_SESSIONS_PER_USER (2 here)", async () => {
    const sessions = [await signedIn('bob'), await signedIn('bob'), await signedIn('bob')];
    try {
      const statuses = [];
      for (const session of sessions)
        statuses.push((await session.browser.request(`${shop.urls.gateway}/api/session`)).status);
      assert.deepEqual(statuses, [401, 200, 200]);
      assert.equal(
        (await alice.browser.request(`${shop.urls.gateway}/api/session`)).status,
        200,
        "another user's session stays",
      );
    } finally {
      for (const session of sessions) await session.browser.close();
    }
  });

  after(async () => {
    await alice?.browser.close();
  });
});
