/**
 * The dashboard in a real browser (Debian's Chromium, headless, through playwright-core) against
 * the whole shop: the administrator signs in through the identity provider's login page, sees every
 * shop service on the overview; a compromised inventory then tries payments (lateral movement) and
 * the alert appears on the dashboard within 5 s; a scan's run shows on the Scans page and its probes on
 * their own. A screenshot of each page goes to
 * test-output/dashboard/ (LOCKSTEP_TEST_OUTPUT moves it).
 *
 * Without Chromium the test is skipped with a message, except in CI (CI=true), where it must run:
 * .ci/run installs Debian's `chromium`.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, it } from 'node:test';
import { chromium, type Browser } from 'playwright-core';
import { freePortBase, startShop, type RunningShop } from '../launch.ts';
import { call, capturedTxnToken, stolenCredentials } from '../drill/attacker.ts';

const CHROMIUM = process.env.LOCKSTEP_CHROMIUM ?? '/usr/bin/chromium';
const available = existsSync(CHROMIUM);
if (!available && process.env.CI === 'true')
  throw new Error(
    `CI needs Chromium at ${CHROMIUM} for the dashboard's browser tests: apt-get install chromium (.ci/run does)`,
  );
const output = resolve(process.env.LOCKSTEP_TEST_OUTPUT ?? 'test-output', 'dashboard');
const dataDir = mkdtempSync(join(tmpdir(), 'lockstep-dashboard-browser-'));
let shop: RunningShop;
let browser: Browser;

before(async () => {
  if (!available) return;
  shop = await startShop({ dataDir, portBase: await freePortBase() });
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
  mkdirSync(output, { recursive: true });
});
after(async () => {
  await browser?.close();
  await shop?.stop();
  rmSync(dataDir, { recursive: true, force: true });
});

it(
  'an administrator signs in, sees every service, and sees a lateral-movement alert appear within 5 s',
  {
    skip: available ? false : `Chromium not found at ${CHROMIUM} (apt-get install chromium, or set LOCKSTEP_CHROMIUM)`,
  },
  async () => {
    // The control plane's certificate comes from the development CA: the browser is told to accept it.
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    const page = await context.newPage();
    await page.goto(`${shop.urls.controlPlane}/dashboard`);
    await page.getByLabel('User name').fill('ops');
    await page.getByLabel('Password').fill(shop.users.ops?.password ?? '');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForURL(/\/dashboard(#.*)?$/);

    for (const service of ['gateway', 'orders', 'inventory', 'payments'])
      await page.locator(`tr[data-service="${service}"]`).waitFor({ timeout: 10_000 });
    await page.screenshot({ path: join(output, 'overview.png'), fullPage: true });

    // A compromised inventory (its own valid SVID and key, a genuine Txn-Token) tries to charge.
    const inventory = await stolenCredentials(shop, 'inventory');
    const token = await capturedTxnToken(
      shop,
      await stolenCredentials(shop, 'gateway'),
      'alice',
      shop.users.alice?.password ?? '',
    );
    const attemptedAt = Date.now();
    const answer = await call(`${shop.urls.payments}/charges`, {
      method: 'POST',
      json: { orderId: 'x', amount: 100 },
      headers: { 'txn-token': token },
      as: inventory,
    });
    assert.equal(answer.status, 403);

    await page.goto(`${shop.urls.controlPlane}/dashboard#alerts`);
    await page.locator('tr[data-rule="lateral-movement"]').waitFor({ timeout: 5_000 });
    const seenAfter = Date.now() - attemptedAt;
    console.log(
      `dashboard: the lateral-movement alert was on screen ${seenAfter} ms after the attempt (limit 5000 ms)`,
    );
    assert.ok(seenAfter <= 5_000);
    assert.match(await page.locator('tr[data-rule="lateral-movement"]').innerText(), /inventory→payments/);
    await page.screenshot({ path: join(output, 'alerts.png'), fullPage: true });

    for (const name of ['graph', 'events']) {
      await page.goto(`${shop.urls.controlPlane}/dashboard#${name}`);
      await page.locator('main h2').waitFor();
      await page.screenshot({ path: join(output, `${name}.png`), fullPage: true });
    }
    // A scan's run reaches the Scans page: its row, and its service × attack matrix.
    const scan = await shop.adminExit('scan', '--manifest', fileURLToPath(new URL('../scan.yaml', import.meta.url)));
    assert.equal(scan.code, 0, scan.out.join('\n'));
    const runId = /run ([0-9a-f-]{36})/.exec(scan.out.join('\n'))?.[1] ?? '';
    await page.goto(`${shop.urls.controlPlane}/dashboard#scans`);
    await page.locator(`tr[data-run="${runId}"]`).waitFor({ timeout: 5_000 });
    assert.match(await page.locator('main').innerText(), /authz\.bola/);
    await page.screenshot({ path: join(output, 'scans.png'), fullPage: true });
    // The scan's probes have their own page: they count in no deny rate, graph or event list.
    await page.goto(`${shop.urls.controlPlane}/dashboard#probes`);
    await page.locator('tr[data-probe-service="orders"]').waitFor({ timeout: 10_000 });
    await page.screenshot({ path: join(output, 'probes.png'), fullPage: true });
    await page.goto(`${shop.urls.controlPlane}/dashboard#overview`);
    await page.locator('tr[data-service="orders"] td[data-probes] a').waitFor({ timeout: 5_000 });
    await page.screenshot({ path: join(output, 'overview-after-scan.png'), fullPage: true });
    await page.goto(`${shop.urls.controlPlane}/dashboard#events?decision=deny`);
    const txnLink = page.locator('main table a').first();
    await txnLink.waitFor({ timeout: 5_000 });
    await txnLink.click();
    await page.locator('main ol li').first().waitFor();
    await page.screenshot({ path: join(output, 'transaction.png'), fullPage: true });
    await context.close();
  },
);
