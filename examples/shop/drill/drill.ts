/**
 * The drill: the same shop twice — perimeter-only (the seed article's "before": security at the
 * gateway only, internal services accept any caller) and Lockstep — and the same attacks against
 * both. Each attack says what an attacker has and does, and what counts as stopped.
 */
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePortBase, SHOP_POLICIES, startShop, type RunningShop } from '../launch.ts';
import { call, capturedTxnToken, forgedTxnToken, signedIn, stolenCredentials, type Answer } from './attacker.ts';

export type Mode = 'perimeter-only' | 'lockstep';

export interface Outcome {
  /** True when the attack got what it wanted. */
  readonly through: boolean;
  /** What was answered: status and code, or the failure. */
  readonly summary: string;
  /** The reason code and request id (audit event evidence), or the drift report. */
  readonly evidence: string;
}

export interface AttackResult {
  readonly id: string;
  readonly title: string;
  readonly outcomes: Partial<Record<Mode, Outcome>>;
}

interface Context {
  readonly shop: RunningShop;
  readonly mode: Mode;
  readonly policyDir: string;
  readonly aliceOrder: string;
  readonly passwords: Readonly<Record<string, string>>;
}

/** What shipping.py would read as the verified caller, were its sidecar not there to drop them. */
function forgedIdentityHeaders(): Record<string, string> {
  return {
    'x-lockstep-caller': 'spiffe://shop.test/svc/orders',
    'x-lockstep-sub': 'alice',
    'x-lockstep-roles': 'customer',
  };
}

/** An HTTP answer as an outcome: 2xx means the attack got through. */
function outcome(answer: Answer): Outcome {
  if (answer.status === null)
    return {
      through: false,
      summary: `connection refused (${answer.failure ?? 'TLS'})`,
      evidence: answer.failure ?? '',
    };
  const code = typeof answer.body.error === 'string' ? answer.body.error : '';
  const requestId = typeof answer.body.requestId === 'string' ? ` request ${answer.body.requestId}` : '';
  return {
    through: answer.status >= 200 && answer.status < 300,
    summary: `${answer.status}${code ? ` ${code}` : ''}`,
    evidence: code ? `${code}${requestId}` : `HTTP ${answer.status}`,
  };
}

/**
 * A compromised `service` POSTs `json` to `url` as alice. Perimeter-only: a bare `x-user` header is enough
 * inside. Lockstep: the attacker holds the service's own SVID and key, and a Txn-Token for alice captured
 * from the gateway — what is left to refuse it is the policy.
 */
async function postAsCompromised(
  { shop, mode, passwords }: Context,
  service: string,
  url: string,
  json: unknown,
): Promise<Outcome> {
  if (mode === 'perimeter-only')
    return outcome(await call(url, { method: 'POST', json, headers: { 'x-user': 'alice' } }));
  const compromised = await stolenCredentials(shop, service);
  const token = await capturedTxnToken(shop, await stolenCredentials(shop, 'gateway'), 'alice', passwords.alice ?? '');
  return outcome(await call(url, { method: 'POST', json, headers: { 'txn-token': token }, as: compromised }));
}

const ATTACKS: readonly { id: string; title: string; run(context: Context): Promise<Outcome> }[] = [
  {
    id: 'a',
    title: 'direct call to an internal service, bypassing the gateway',
    // From inside the network, no certificate: read alice's order straight from orders.
    run: async ({ shop, aliceOrder }) =>
      outcome(await call(`${shop.urls.orders}/orders/${aliceOrder}`, { headers: { 'x-user': 'alice' } })),
  },
  {
    id: 'b',
    title: 'compromised inventory (its own valid SVID and key) charges at payments',
    run: (context) =>
      postAsCompromised(context, 'inventory', `${context.shop.urls.payments}/charges`, {
        orderId: 'drill',
        amount: 99_900,
      }),
  },
  {
    id: 'c',
    title: 'captured Txn-Token replayed from outside (no client certificate)',
    run: async ({ shop, mode, passwords }) => {
      if (mode === 'perimeter-only')
        return outcome(await call(`${shop.urls.orders}/orders`, { headers: { 'x-user': 'alice' } }));
      const token = await capturedTxnToken(
        shop,
        await stolenCredentials(shop, 'gateway'),
        'alice',
        passwords.alice ?? '',
      );
      return outcome(await call(`${shop.urls.orders}/orders`, { headers: { 'txn-token': token } }));
    },
  },
  {
    id: 'd',
    title: "forged Txn-Token (attacker's own key, admin role added)",
    run: async ({ shop, mode }) => {
      if (mode === 'perimeter-only')
        return outcome(await call(`${shop.urls.orders}/orders`, { headers: { 'x-user': 'alice' } }));
      // Even with a valid workload identity, the forged token is what gets refused.
      return outcome(
        await call(`${shop.urls.orders}/orders`, {
          headers: { 'txn-token': await forgedTxnToken('alice') },
          as: await stolenCredentials(shop, 'gateway'),
        }),
      );
    },
  },
  {
    id: 'e',
    title: "signed-in user reads another user's order through the gateway (BOLA)",
    run: async ({ shop, aliceOrder, passwords }) => {
      const bob = await signedIn(shop, 'bob', passwords.bob ?? '');
      try {
        const answer = await bob.browser.request(`${shop.urls.gateway}/api/orders/${aliceOrder}`);
        return outcome({ status: answer.status, body: (answer.body ?? {}) as Record<string, unknown> });
      } finally {
        await bob.browser.close();
      }
    },
  },
  {
    id: 'f',
    title: "revoked user's still-unexpired Txn-Token",
    run: async ({ shop, mode, passwords }) => {
      if (mode === 'perimeter-only') {
        await shop.admin('revoke', 'sub', 'carol', '--reason', 'drill: account taken over');
        return outcome(await call(`${shop.urls.orders}/orders`, { headers: { 'x-user': 'carol' } }));
      }
      const gateway = await stolenCredentials(shop, 'gateway');
      const token = await capturedTxnToken(shop, gateway, 'carol', passwords.carol ?? '');
      await shop.admin('revoke', 'sub', 'carol', '--reason', 'drill: account taken over');
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      return outcome(await call(`${shop.urls.orders}/orders`, { headers: { 'txn-token': token }, as: gateway }));
    },
  },
  {
    id: 'g',
    title: 'stale policy: a service misses a policy update',
    run: async ({ shop, mode, policyDir }) => {
      // payments is paused while the policy changes, so it cannot hear the change.
      shop.signal('payments', 'SIGSTOP');
      try {
        writeFileSync(
          join(policyDir, 'drill.cedar'),
          '@id("drill-update")\nforbid (principal == Lockstep::Workload::"spiffe://shop.test/svc/reports", action == Lockstep::Action::"payments:charge", resource == Lockstep::Service::"payments");\n',
        );
        await new Promise((resolve) => setTimeout(resolve, 1_000));
        const status = await shop.adminExit('policy', 'status');
        const drifting = status.out.filter((line) => line.includes('DRIFT')).map((line) => line.split(/\s+/)[0]);
        if (mode === 'perimeter-only')
          return {
            through: true,
            summary: 'nothing notices',
            evidence: 'the internal services enforce no policy: there is nothing to be stale, and nothing to report',
          };
        return drifting.includes('payments')
          ? {
              through: false,
              summary: 'drift reported',
              evidence: `lockstep policy status exit ${status.code}: payments DRIFT`,
            }
          : { through: true, summary: 'not reported', evidence: status.out.join(' | ') };
      } finally {
        shop.signal('payments', 'SIGCONT');
      }
    },
  },
  {
    id: 'h',
    title: 'direct call to the Python shipping service, identity headers forged, no certificate',
    // shipping.py trusts the x-lockstep-* headers it is given: only its sidecar may set them.
    run: async ({ shop }) =>
      outcome(
        await call(`${shop.urls.shipping}/quotes`, {
          method: 'POST',
          json: { item: 'tea', quantity: 1 },
          headers: { 'x-user': 'alice', ...forgedIdentityHeaders() },
        }),
      ),
  },
  {
    id: 'i',
    title: 'stolen orders identity without a Txn-Token asks shipping for a quote',
    run: async ({ shop, mode }) =>
      outcome(
        await call(`${shop.urls.shipping}/quotes`, {
          method: 'POST',
          json: { item: 'tea', quantity: 1 },
          headers: { 'x-user': 'alice', ...forgedIdentityHeaders() },
          ...(mode === 'lockstep' ? { as: await stolenCredentials(shop, 'orders') } : {}),
        }),
      ),
  },
  {
    id: 'j',
    title: 'compromised payments (its own SVID, a captured Txn-Token) asks shipping for a quote',
    run: (context) =>
      postAsCompromised(context, 'payments', `${context.shop.urls.shipping}/quotes`, { item: 'tea', quantity: 1 }),
  },
];

async function runMode(mode: Mode, results: AttackResult[], progress: (line: string) => void): Promise<void> {
  const dataDir = mkdtempSync(join(tmpdir(), `lockstep-drill-${mode}-`));
  const policyDir = join(dataDir, 'policies');
  cpSync(SHOP_POLICIES, policyDir, { recursive: true });
  progress(`${mode}: starting the shop`);
  const shop = await startShop({ dataDir: join(dataDir, 'state'), portBase: await freePortBase(), mode, policyDir });
  try {
    const [carolLine = ''] = await shop.admin('user', 'add', 'carol', '--role', 'customer');
    const passwords: Record<string, string> = {
      ...Object.fromEntries(Object.entries(shop.users).map(([name, user]) => [name, user.password])),
      carol: /: (\S+)$/.exec(carolLine)?.[1] ?? '',
    };
    const alice = await signedIn(shop, 'alice', passwords.alice ?? '');
    const placed = await alice.browser.request(`${shop.urls.gateway}/api/orders`, {
      method: 'POST',
      json: { item: 'tea', quantity: 1 },
      headers: { 'x-csrf-token': alice.csrf },
    });
    await alice.browser.close();
    const aliceOrder = (placed.body as { orderId?: string }).orderId;
    if (placed.status !== 201 || aliceOrder === undefined)
      throw new Error(`${mode}: alice could not place an order (${placed.status} ${JSON.stringify(placed.body)})`);
    for (const attack of ATTACKS) {
      progress(`${mode}: ${attack.id}. ${attack.title}`);
      let result: Outcome;
      try {
        result = await attack.run({ shop, mode, policyDir, aliceOrder, passwords });
      } catch (error) {
        result = { through: false, summary: 'attack could not run', evidence: (error as Error).message };
      }
      let entry = results.find((existing) => existing.id === attack.id);
      if (entry === undefined) results.push((entry = { id: attack.id, title: attack.title, outcomes: {} }));
      (entry.outcomes as Record<Mode, Outcome>)[mode] = result;
    }
  } finally {
    await shop.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/** Runs both modes; returns the results and whether Lockstep stopped every attack. */
export async function runDrill(
  progress: (line: string) => void = () => {},
): Promise<{ results: AttackResult[]; lockstepHeld: boolean }> {
  const results: AttackResult[] = [];
  await runMode('perimeter-only', results, progress);
  await runMode('lockstep', results, progress);
  const lockstepHeld = results.every(
    (result) =>
      result.outcomes.lockstep !== undefined &&
      !result.outcomes.lockstep.through &&
      result.outcomes.lockstep.summary !== 'attack could not run',
  );
  return { results, lockstepHeld };
}

export function table(results: readonly AttackResult[]): string {
  const cell = (result?: Outcome) =>
    result === undefined ? '—' : `${result.through ? 'LET THROUGH' : 'stopped'} (${result.summary})`;
  const rows = results.map((result) => [
    `${result.id}. ${result.title}`,
    cell(result.outcomes['perimeter-only']),
    cell(result.outcomes.lockstep),
    result.outcomes.lockstep?.evidence ?? '',
  ]);
  const header = ['attack', 'perimeter-only', 'Lockstep', 'evidence (Lockstep)'];
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map((row) => (row[column] ?? '').length)),
  );
  const line = (row: readonly string[]) =>
    row
      .map((value, column) => value.padEnd(widths[column] ?? 0))
      .join('  ')
      .trimEnd();
  return [line(header), widths.map((width) => '-'.repeat(width)).join('  '), ...rows.map(line)].join('\n');
}
