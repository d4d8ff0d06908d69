/**
 * TLS at the edge: with a certificate (GATEWAY_TLS_CERT/KEY, here `gatewayTls`), the gateway serves
 * HTTPS only. A user signs in through the real OpenID flow over HTTPS (the redirect URI is the https
 * one); cookies are Secure, answers carry HSTS, and plain HTTP to the gateway's port gets no answer.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Agent, request } from 'undici';
import { createTestBrowser, createTestCa, type TestCa } from '@lockstep/testkit';
import { freePortBase, startShop, type RunningShop } from '../launch.ts';

const dataDir = mkdtempSync(join(tmpdir(), 'lockstep-edge-tls-'));
let shop: RunningShop;
let edgeCa: TestCa;

before(async () => {
  edgeCa = await createTestCa({ trustDomain: 'edge.test' });
  const cert = await edgeCa.issueCert({ dnsNames: ['localhost'], eku: ['serverAuth'], subject: 'CN=localhost' });
  writeFileSync(join(dataDir, 'edge.pem'), cert.chainPem);
  writeFileSync(join(dataDir, 'edge.key.pem'), cert.keyPem, { mode: 0o600 });
  shop = await startShop({
    dataDir,
    portBase: await freePortBase(),
    gatewayTls: { certFile: join(dataDir, 'edge.pem'), keyFile: join(dataDir, 'edge.key.pem') },
  });
});
after(async () => {
  await shop?.stop();
  rmSync(dataDir, { recursive: true, force: true });
});

describe('the shop with TLS at the edge', () => {
  it('serves the gateway over HTTPS: sign-in, Secure cookies, HSTS', async () => {
    assert.match(shop.urls.gateway, /^https:\/\/localhost:\d+$/);
    // Both CAs: the control plane's (its sign-in page) and the edge certificate's.
    const browser = createTestBrowser({
      ca: `${readFileSync(join(dataDir, 'bundle.pem'), 'utf8')}\n${edgeCa.bundlePem}`,
    });
    const agent = new Agent({ connect: { ca: edgeCa.bundlePem } });
    try {
      const login = await request(`${shop.urls.gateway}/login`, { dispatcher: agent });
      await login.body.dump();
      assert.equal(login.statusCode, 303);
      const cookie = String(login.headers['set-cookie']);
      assert.match(cookie, /^shop_login=/);
      assert.match(cookie, /; Secure/i, 'cookies are Secure under TLS');
      assert.match(cookie, /; HttpOnly/i);
      assert.match(String(login.headers['strict-transport-security']), /max-age=\d+/);

      const page = await browser.open(`${shop.urls.gateway}/login`);
      const done = await browser.submit(page, { username: 'alice', password: shop.users.alice?.password ?? '' });
      assert.equal(done.url, `${shop.urls.gateway}/`, 'back at the shop, over HTTPS');
      const session = await browser.request(`${shop.urls.gateway}/api/session`);
      assert.equal(session.status, 200);
      assert.equal((session.body as { user?: { sub?: string } }).user?.sub, 'alice');
    } finally {
      await browser.close();
      await agent.close();
    }
  });

  it("gives plain HTTP to the gateway's port no answer", async () => {
    const { port } = new URL(shop.urls.gateway);
    const outcome = await new Promise<string>((resolve) => {
      const outgoing = httpRequest({ host: '127.0.0.1', port: Number(port), path: '/', timeout: 5_000 }, (response) => {
        response.resume();
        resolve(`HTTP ${response.statusCode}`);
      });
      outgoing.on('timeout', () => outgoing.destroy(new Error('timed out')));
      outgoing.on('error', (error: Error & { code?: string }) => resolve(error.code ?? error.message));
      outgoing.end();
    });
    console.log(`plain HTTP to the gateway's TLS port: ${outcome}`);
    assert.doesNotMatch(outcome, /^HTTP /, `no HTTP answer, got ${outcome}`);
  });
});
