/**
 * The whole shop, as `npm start` runs it, on free ports: control plane and five services in their own
 * processes. A user signs in through the real OpenID flow (login form, code + PKCE), places an order,
 * and the audit events of gateway, orders, shipping (Python, behind its sidecar), inventory and payments
 * carry the same `txn`. Then the bad inputs a user can cause, forged identity headers against the Python
 * service, its restart after a crash, and what happens when a service or the control plane is down.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { createTestBrowser, rawTlsRequest, type TestBrowser } from '@lockstep/testkit';
import type { DecisionEvent } from '@lockstep/guard';
import { call, capturedTxnToken, stolenCredentials } from '../drill/attacker.ts';
import { freePortBase, startShop, type RunningShop } from '../launch.ts';

const dataDir = mkdtempSync(join(tmpdir(), 'lockstep-shop-'));
let shop: RunningShop;
/** What the supervisor said, as `npm start` prints it (a restart is done once it says `… restarted`). */
const supervision: string[] = [];

before(async () => {
  const started = performance.now();
  shop = await startShop({
    dataDir,
    portBase: await freePortBase(),
    onSupervision: (line) => {
      supervision.push(line);
      process.stderr.write(`lockstep shop: ${line}\n`);
    },
  });
  console.log(`shop ready in ${((performance.now() - started) / 1000).toFixed(1)} s`);
});
after(async () => {
  await shop?.stop();
  rmSync(dataDir, { recursive: true, force: true });
});

async function signedIn(user: string): Promise<{ browser: TestBrowser; csrf: string }> {
  const browser = createTestBrowser({ ca: readFileSync(join(dataDir, 'bundle.pem'), 'utf8') });
  const login = await browser.open(`${shop.urls.gateway}/login`);
  assert.equal(login.status, 200, `the login page: ${login.url}`);
  const done = await browser.submit(login, { username: user, password: shop.users[user]?.password ?? '' });
  assert.equal(done.url, `${shop.urls.gateway}/`, 'back at the shop after signing in');
  const session = await browser.request(`${shop.urls.gateway}/api/session`);
  assert.equal(session.status, 200);
  return { browser, csrf: (session.body as { csrf: string }).csrf };
}

function auditEvents(service: 'gateway' | 'orders' | 'inventory' | 'payments' | 'shipping'): DecisionEvent[] {
  return readFileSync(shop.auditFile(service), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as DecisionEvent);
}

/** shipping.py's JSON lines in the shipping log (the sidecar's lines are there too, without `runtime`). */
function shippingLog(): Record<string, unknown>[] {
  return readFileSync(join(dataDir, 'logs', 'shipping.log'), 'utf8')
    .split('\n')
    .flatMap((line) => {
      try {
        const entry = JSON.parse(line) as Record<string, unknown>;
        return entry.runtime === 'python' ? [entry] : [];
      } catch {
        return [];
      }
    });
}

/** This shop's shipping.py processes: those whose environment names this test's socket. */
function shippingPythonPids(): number[] {
  const listen = `SHIPPING_LISTEN=unix:${join(dataDir, 'shop', 'shipping', 'shipping.sock')}`;
  return readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name))
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0').includes(listen);
      } catch {
        return false; // gone meanwhile, or not ours to read
      }
    })
    .map(Number);
}

async function eventually<T>(read: () => T | undefined | Promise<T | undefined>, what: string): Promise<T> {
  const started = Date.now();
  for (;;) {
    const value = await (async () => {
      try {
        return await read();
      } catch {
        return undefined;
      }
    })();
    if (value !== undefined) return value;
    if (Date.now() - started > 5_000) return assert.fail(`${what}: not within 5 s`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe('the shop, end to end', () => {
  let alice: { browser: TestBrowser; csrf: string };
  let aliceOrder: string;

  it('signs a user in, places an order: one txn across gateway, orders, shipping, inventory, payments', async () => {
    alice = await signedIn('alice');
    const placed = await alice.browser.request(`${shop.urls.gateway}/api/orders`, {
      method: 'POST',
      json: { item: 'coffee', quantity: 2 },
      headers: { 'x-csrf-token': alice.csrf },
    });
    assert.equal(placed.status, 201, JSON.stringify(placed.body));
    const order = placed.body as {
      orderId: string;
      customer: string;
      amount: number;
      shipping: { quoteId: string; carrier: string; etaDays: number; price: number };
    };
    aliceOrder = order.orderId;
    assert.equal(order.customer, 'alice');
    assert.equal(order.amount, 1780);
    // The Python service's quote: a parcel for two, insurance 2 % of 17.80 (its price asked from inventory).
    assert.deepEqual(
      { ...order.shipping, quoteId: typeof order.shipping.quoteId },
      { quoteId: 'string', carrier: 'Parcelwise', etaDays: 2, price: 390 + 2 * 60 + 36 },
    );
    assert.equal(JSON.stringify(placed.body).includes('eyJ'), false, 'no token goes outward');

    const gateway = await eventually(
      () =>
        auditEvents('gateway').findLast(
          (event) => event.route === '/api/orders' && event.method === 'POST' && event.decision === 'allow',
        ),
      "the gateway's event",
    );
    const txn = gateway.txn;
    assert.ok(txn);
    for (const [service, action] of [
      ['orders', 'orders:create'],
      ['shipping', 'shipping:quote'],
      ['inventory', 'inventory:reserve'],
      ['payments', 'payments:charge'],
    ] as const) {
      const event: DecisionEvent = await eventually(
        () => auditEvents(service).find((entry) => entry.txn === txn && entry.action === action),
        `${service}'s event for txn ${txn}`,
      );
      assert.equal(event.action, action);
      assert.equal(event.sub, 'alice');
      assert.equal(event.decision, 'allow');
    }
    assert.equal(
      auditEvents('payments').find((entry) => entry.txn === txn)?.caller,
      'spiffe://shop.test/svc/orders',
      'payments was called by orders',
    );
    // shipping.py read the identity its sidecar verified, and called inventory through the egress with the Txn-Token.
    const quoted = await eventually(
      () => shippingLog().find((line) => line.message === 'quoted' && line.txn === txn),
      "shipping.py's log line for the quote",
    );
    const shippingEvent = auditEvents('shipping').find((entry) => entry.txn === txn);
    assert.deepEqual(
      { caller: quoted.caller, sub: quoted.sub, requestId: quoted.requestId, runtime: quoted.runtime },
      { caller: 'spiffe://shop.test/svc/orders', sub: 'alice', requestId: shippingEvent?.requestId, runtime: 'python' },
    );
    const browse = await eventually(
      () => auditEvents('inventory').find((entry) => entry.txn === txn && entry.action === 'inventory:browse'),
      "inventory's event for shipping's call",
    );
    assert.deepEqual(
      [browse.caller, browse.sub, browse.decision],
      ['spiffe://shop.test/svc/shipping', 'alice', 'allow'],
    );

    // The same events reached the control plane's collector, in a trail that verifies.
    const verified = await eventually(async () => {
      const { code, out } = await shop.adminExit('audit', 'verify');
      // The five services' sources; the control plane's own (admin events) is one more.
      return code === 0 && out.filter((line) => line.startsWith('spiffe://shop.test/svc/')).length >= 5
        ? out
        : undefined;
    }, 'the trail of all five services verifies');
    assert.match(verified.at(-1) ?? '', /^audit trail verified: [6-9] sources/);
    assert.ok(
      verified.some((line) => /^spiffe:\/\/shop\.test\/lockstep\/control-plane: \d+ events/.test(line)),
      'the admin events too',
    );
  });

  it('lets the administrator see every shop service on the dashboard; a customer is refused', async () => {
    const admin = createTestBrowser({ ca: readFileSync(join(dataDir, 'bundle.pem'), 'utf8') });
    try {
      const login = await admin.open(`${shop.urls.controlPlane}/dashboard`);
      const done = await admin.submit(login, { username: 'ops', password: shop.users.ops?.password ?? '' });
      assert.equal(done.status, 200, done.body.slice(0, 200));
      const overview = await admin.request(`${shop.urls.controlPlane}/dashboard/api/overview`);
      const services = (overview.body as { services: { service: string; drift: boolean; stale: boolean }[] }).services;
      assert.deepEqual(services.map((entry) => entry.service).sort(), [
        'gateway',
        'inventory',
        'orders',
        'payments',
        'shipping',
      ]);
      assert.ok(services.every((entry) => !entry.stale));
    } finally {
      await admin.close();
    }
    const customer = createTestBrowser({ ca: readFileSync(join(dataDir, 'bundle.pem'), 'utf8') });
    try {
      const login = await customer.open(`${shop.urls.controlPlane}/dashboard`);
      assert.equal(
        (await customer.submit(login, { username: 'bob', password: shop.users.bob?.password ?? '' })).status,
        403,
      );
    } finally {
      await customer.close();
    }
  });

  it("lets a customer read her own order, not another customer's (BOLA, decided in Cedar)", async () => {
    const own = await alice.browser.request(`${shop.urls.gateway}/api/orders/${aliceOrder}`);
    assert.equal(own.status, 200);
    const bob = await signedIn('bob');
    try {
      const stolen = await bob.browser.request(`${shop.urls.gateway}/api/orders/${aliceOrder}`);
      assert.equal(stolen.status, 403);
      assert.equal((stolen.body as { error: string }).error, 'LOCKSTEP_ERR_DENIED');
      const event: DecisionEvent = await eventually(
        () => auditEvents('orders').findLast((entry) => entry.sub === 'bob' && entry.action === 'orders:read'),
        'the refusal',
      );
      assert.equal(event.decision, 'deny');
      const listed = await bob.browser.request(`${shop.urls.gateway}/api/orders`);
      assert.deepEqual(
        (listed.body as { orders: { orderId: string; customer: string }[] }).orders.map(({ orderId, customer }) => [
          orderId,
          customer,
        ]),
        [['demo-bob', 'bob']],
        "bob's list holds only bob's (demo) order",
      );
    } finally {
      await bob.browser.close();
    }
  });

  it('answers what a user can get wrong with what to do', async () => {
    const anonymous = createTestBrowser({ ca: readFileSync(join(dataDir, 'bundle.pem'), 'utf8') });
    try {
      const noSession = await anonymous.request(`${shop.urls.gateway}/api/orders`);
      assert.equal(noSession.status, 401);
      assert.deepEqual(noSession.body, { error: 'LOGIN_REQUIRED', login: '/login' });
      const login = await anonymous.open(`${shop.urls.gateway}/login`);
      const wrong = await anonymous.submit(login, { username: 'alice', password: 'not her password at all' });
      assert.equal(wrong.status, 401);
      assert.match(wrong.body, /The user name or password is incorrect\./);
    } finally {
      await anonymous.close();
    }
    const noCsrf = await alice.browser.request(`${shop.urls.gateway}/api/orders`, {
      method: 'POST',
      json: { item: 'tea', quantity: 1 },
    });
    assert.equal(noCsrf.status, 403);
    assert.equal((noCsrf.body as { error: string }).error, 'CSRF_TOKEN_INVALID');
    for (const [body, field] of [
      [{ item: 'tea', quantity: 200 }, 'quantity'],
      [{ item: 'gold', quantity: 1 }, 'item'],
      [{ item: 'tea', quantity: 1, price: 0 }, 'price'],
    ] as const) {
      const malformed = await alice.browser.request(`${shop.urls.gateway}/api/orders`, {
        method: 'POST',
        json: body,
        headers: { 'x-csrf-token': alice.csrf },
      });
      assert.equal(malformed.status, 400);
      assert.match(
        String((malformed.body as { message: string }).message),
        new RegExp(`^${field}:`),
        `names the field ${field}`,
      );
    }
  });

  it('sets the browser-side protections on every answer', async () => {
    const page = await alice.browser.request(`${shop.urls.gateway}/`);
    const csp = String(page.headers['content-security-policy']);
    assert.match(csp, /script-src 'self'/);
    assert.doesNotMatch(csp, /unsafe-inline/);
    assert.match(csp, /frame-ancestors 'none'/);
    assert.equal(page.headers['x-content-type-options'], 'nosniff');
    const html = readFileSync(new URL('../public/index.html', import.meta.url), 'utf8');
    assert.doesNotMatch(html, /<script>|\son\w+="/, 'no inline script or handler');
  });

  it('passes lockstep scan: the full catalogue against every service finds nothing (no false positive), and the run reaches the monitor', async () => {
    const reports = mkdtempSync(join(tmpdir(), 'lockstep-shop-scan-'));
    try {
      const started = performance.now();
      const scan = await shop.adminExit(
        'scan',
        '--manifest',
        fileURLToPath(new URL('../scan.yaml', import.meta.url)),
        '--json',
        join(reports, 'scan.json'),
      );
      const seconds = (performance.now() - started) / 1000;
      console.log(
        `lockstep scan of the shop: exit ${scan.code} in ${seconds.toFixed(1)} s — ${/^Summary: .*$/m.exec(scan.out.join('\n'))?.[0] ?? ''}`,
      );
      assert.equal(scan.code, 0, [...scan.out, ...scan.err].join('\n'));
      const report = JSON.parse(readFileSync(join(reports, 'scan.json'), 'utf8')) as {
        services: { name: string }[];
        summary: { enforced: number; weak: number; inconclusive: number };
        runId: string;
      };
      assert.deepEqual(
        report.services.map((service) => service.name),
        ['inventory', 'orders', 'payments', 'shipping'],
        'every service with a guarded route (the gateway guards only its outbound calls), the sidecar too',
      );
      assert.equal(report.summary.weak, 0);
      assert.equal(report.summary.inconclusive, 0);
      assert.ok(report.summary.enforced > 330, `enforced ${report.summary.enforced}`);
      // scan.yaml's bodies are admitted, so the input checks vary a body each route takes.
      assert.deepEqual(
        scan.err.filter((line) => line.includes('body was not admitted')),
        [],
      );
      assert.ok(
        scan.out.some((line) => line.includes(`run ${report.runId}`) && line.startsWith('sent to the monitor')),
        "the run is on the dashboard's Scans page",
      );
    } finally {
      rmSync(reports, { recursive: true, force: true });
    }
  });

  it("answers each service's public health check also with a query string (payments once matched the raw URL)", async () => {
    const caPem = readFileSync(join(dataDir, 'bundle.pem'), 'utf8');
    for (const service of ['orders', 'inventory', 'payments', 'shipping'] as const) {
      const { hostname: host, port } = new URL(shop.urls[service]);
      const raw = 'GET /health?x=1 HTTP/1.1\r\nhost: shop\r\nconnection: close\r\n\r\n';
      const answer = await rawTlsRequest({ host, port: Number(port), caPem, raw });
      assert.match(
        String(answer),
        /^HTTP\/1\.1 200 /,
        `${service}: ${String(typeof answer === 'string' ? answer : answer.error).slice(0, 200)}`,
      );
    }
  });

  it('passes the Python service only the identity its sidecar verified, never forged x-lockstep-* headers', async () => {
    // A real caller (orders' identity, alice's genuine Txn-Token) that forges the headers shipping.py trusts,
    // in every spelling a server could read as them.
    const orders = await stolenCredentials(shop, 'orders');
    const token = await capturedTxnToken(
      shop,
      await stolenCredentials(shop, 'gateway'),
      'alice',
      shop.users.alice?.password ?? '',
    );
    const answer = await call(`${shop.urls.shipping}/quotes`, {
      method: 'POST',
      json: { item: 'tea', quantity: 1 },
      as: orders,
      headers: {
        'txn-token': token,
        'x-lockstep-sub': 'bob',
        'X-Lockstep-Caller': 'spiffe://shop.test/svc/gateway',
        'x-lockstep-roles': 'admin',
        'x-lockstep-txn': 'forged',
        x_lockstep_sub: 'mallory',
        'x-forwarded-client-cert': 'URI=spiffe://shop.test/svc/gateway',
      },
    });
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    assert.deepEqual([answer.body.quotedFor, answer.body.caller], ['alice', 'spiffe://shop.test/svc/orders']);
    assert.notEqual(answer.body.txn, 'forged');
    // shipping.py logged what it was given: the verified caller and user.
    const logged = await eventually(
      () => shippingLog().find((line) => line.quoteId === answer.body.quoteId),
      "shipping.py's log line for the quote",
    );
    assert.deepEqual([logged.sub, logged.caller], ['alice', 'spiffe://shop.test/svc/orders']);
    // Without a certificate, the forged headers alone get nothing, and shipping.py never sees the call.
    const quotes = () => shippingLog().filter((line) => line.message === 'quoted').length;
    const before = quotes();
    const anonymous = await call(`${shop.urls.shipping}/quotes`, {
      method: 'POST',
      json: { item: 'tea', quantity: 1 },
      headers: { 'x-lockstep-caller': 'spiffe://shop.test/svc/orders', 'x-lockstep-sub': 'alice' },
    });
    assert.deepEqual([anonymous.status, anonymous.body.error], [401, 'LOCKSTEP_ERR_PEER_CERT_MISSING']);
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(quotes(), before);
  });

  it('restarts the Python service with its sidecar when either dies, rejoining with a fresh join token', async () => {
    // Back means: one shipping.py, a new one, answering through its sidecar's public health check, and the
    // supervisor done with the restart (until it is, it holds no process to signal).
    const restarted = async (gone: readonly number[], what: string) => {
      const started = Date.now();
      const restartsBefore = supervision.filter((line) => line.startsWith('shipping restarted')).length;
      for (;;) {
        const now = shippingPythonPids();
        const healthy = (await call(`${shop.urls.shipping}/health`)).status === 200;
        const supervised = supervision.filter((line) => line.startsWith('shipping restarted')).length > restartsBefore;
        if (healthy && supervised && now.length === 1 && !gone.includes(now[0] as number)) return now;
        assert.ok(Date.now() - started < 45_000, `${what}: shipping not back within 45 s (pids ${now.join(', ')})`);
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    };
    const [python] = shippingPythonPids();
    assert.ok(python !== undefined, 'shipping.py runs');
    // shipping.py crashes: its sidecar stops too, and the supervisor starts both again.
    process.kill(python, 'SIGKILL');
    const after = await restarted([python], 'after shipping.py was killed');
    // The sidecar's process is killed: shipping.py sees its lifeline close and goes, and both start again.
    shop.signal('shipping', 'SIGKILL');
    await restarted(after, 'after its sidecar was killed');
    assert.deepEqual(
      shippingPythonPids().filter((pid) => pid === python || after.includes(pid)),
      [],
      'no shipping.py left behind',
    );
    // And an order gets its quote again: the new sidecar joined, and shipping.py reaches inventory through it.
    const placed = await alice.browser.request(`${shop.urls.gateway}/api/orders`, {
      method: 'POST',
      json: { item: 'cocoa', quantity: 1 },
      headers: { 'x-csrf-token': alice.csrf },
    });
    assert.equal(placed.status, 201, JSON.stringify(placed.body));
    assert.equal((placed.body as { shipping: { carrier: string } }).shipping.carrier, 'Parcelwise');
  });

  it('answers 503 with a request id when a service is down, and refuses new transactions when the control plane is', async () => {
    await shop.kill('payments');
    const paymentsDown = await alice.browser.request(`${shop.urls.gateway}/api/orders`, {
      method: 'POST',
      json: { item: 'tea', quantity: 1 },
      headers: { 'x-csrf-token': alice.csrf },
    });
    assert.equal(paymentsDown.status, 503);
    const answer = paymentsDown.body as { error: string; requestId: string };
    assert.equal(answer.error, 'DOWNSTREAM_UNAVAILABLE');
    assert.ok(answer.requestId);
    assert.doesNotMatch(JSON.stringify(answer), /\bat \w+ \(|node:internal/, 'no stack trace');
    // The gateway records the refusal by its status, not by the code orders sent: a service's word
    // never becomes the gateway's reason (CONTROL_PLANE_UNAVAILABLE would read as an outage).
    const refusalOf = (method: string) => () =>
      auditEvents('gateway').findLast(
        (event) => event.route === '/api/orders' && event.method === method && event.decision === 'deny',
      );
    assert.equal((await eventually(refusalOf('POST'), "the gateway's refusal")).reason, 'DOWNSTREAM_503');

    await shop.kill('controlPlane');
    const cpDown = await alice.browser.request(`${shop.urls.gateway}/api/orders`);
    assert.equal(cpDown.status, 503);
    assert.equal((cpDown.body as { error: string }).error, 'CONTROL_PLANE_UNAVAILABLE');
    assert.equal(
      (await eventually(refusalOf('GET'), "the gateway's refusal")).reason,
      'CONTROL_PLANE_UNAVAILABLE',
      'its own, when the control plane did not answer',
    );
    await alice.browser.close();
  });

  it('rate-limits sign-in attempts at the edge', async () => {
    const browser = createTestBrowser({ ca: readFileSync(join(dataDir, 'bundle.pem'), 'utf8') });
    try {
      const statuses: number[] = [];
      for (let attempt = 0; attempt < 25; attempt += 1)
        statuses.push((await browser.request(`${shop.urls.gateway}/login`)).status);
      assert.ok(statuses.includes(429), `no 429 in ${statuses.join(',')}`);
      assert.equal(statuses.filter((status) => status === 303).length <= 20, true, 'at most 20 a minute');
    } finally {
      await browser.close();
    }
  });
});
