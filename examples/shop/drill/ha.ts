/**
 * The failover drill (`npm run drill -- --ha`, `lockstep drill ha`): the shop on three control-plane
 * replicas sharing one PostgreSQL database (LOCKSTEP_POSTGRES_URL; a database of its own is created for
 * the run and dropped after), each in a network namespace of its own when run as root (netns.ts).
 *
 *   load        4 signed-in browsers list and place orders through the gateway for `durationMs`:
 *               a Txn-Token exchange per request, then gateway → orders → inventory, payments, shipping
 *               over mTLS. Any answer but 2xx, or no answer, counts as failed.
 *   kill        at 5 s, replica r1 — first in the lists of the gateway (its Txn-Token exchanges move to
 *               another replica) and of inventory (its guard's stream moves) — is killed (SIGKILL).
 *   revoke      at once, bob is revoked through r2 only; inventory (its stream failed over), orders and
 *               payments (on r0, told through the database) are asked every 20 ms with bob's captured
 *               Txn-Token until all three refuse it as revoked: `revocationEnforcedMs`.
 *   restart     at 12 s, r1 starts again and rejoins the others.
 *   recovery    meanwhile, two probe workloads join through a relay of the drill's, their only way to the
 *               control plane; the relay is cut; probe-v is revoked; the relay is restored once both
 *               SVIDs are 5 s past expiry. probe-p must recover on its own through r0 (an SVID that verifies
 *               against r2's bundle) and probe-v must be refused.
 *
 * Prints one JSON line {"requests","failed","revocationEnforcedMs","recoveredAfterExpiry","network"} and
 * exits 1 if any request failed, the revocation took over 1 s, or recovery did not go as it must.
 */
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { Agent, request } from 'undici';
import { joinAsWorkload, type AgentEvent, type WorkloadAgent } from '@lockstep/workload';
import { freePortBase, startShop, TRUST_DOMAIN, type RunningShop } from '../launch.ts';
import { call, capturedTxnToken, signedIn, stolenCredentials } from './attacker.ts';
import { drillNetwork } from './netns.ts';
import { startTcpRelay } from '@lockstep/testkit';

const REPLICAS = 3;
/** Short SVIDs, so that renewals run during the failover and expiry comes within the drill. */
const SVID_SECONDS = 60;
const KILL_AT_MS = 5_000;
const RESTART_AT_MS = 12_000;
const WORKERS = 4;
/** Each browser sends a request every 50 ms (80 a second in all), an order among them every 400 ms. */
const REQUEST_EVERY_MS = 50;
const ORDER_EVERY_MS = 400;
/** The gateway's per-session budget (default 300 a minute) is raised for the drill's four sessions. */
const SESSION_BUDGET_PER_MINUTE = 6_000;
const ITEMS = ['tea', 'coffee', 'cocoa'] as const;
/** A revocation made through any live replica reaches every guard within this long (issue 17). */
export const ENFORCED_WITHIN_MS = 1_000;

export interface HaDrillResult {
  readonly requests: number;
  readonly failed: number;
  readonly revocationEnforcedMs: number | null;
  readonly recoveredAfterExpiry: boolean;
  readonly network: 'netns' | 'loopback';
  /** What went wrong, for the log (not in the JSON line's required keys). */
  readonly problems: readonly string[];
}

export async function runHaDrill(
  options: { readonly postgres: string; readonly durationMs?: number },
  progress: (line: string) => void,
): Promise<HaDrillResult> {
  const durationMs = options.durationMs ?? 25_000;
  const database = await createDatabase(options.postgres);
  const problems: string[] = [];
  const dataDir = mkdtempSync(join(tmpdir(), 'lockstep-ha-'));
  const network = await drillNetwork(REPLICAS, database.url);
  progress(`network: ${network.kind}; database ${database.name}`);
  let shop: RunningShop | null = null;
  // The gateway reads it from the environment it inherits: set for the drill's shop, restored after.
  const previousBudget = process.env.GATEWAY_RATE_SESSION;
  let cleaning: Promise<void> | null = null;
  const cleanUp = () =>
    (cleaning ??= (async () => {
      await shop?.stop();
      if (previousBudget === undefined) delete process.env.GATEWAY_RATE_SESSION;
      else process.env.GATEWAY_RATE_SESSION = previousBudget;
      await network.close();
      await database.drop();
      rmSync(dataDir, { recursive: true, force: true });
    })());
  // Ctrl-C or a CI timeout: the namespaces, the bridge and the database go too, then the signal takes its course.
  const onSignal = (signal: NodeJS.Signals) => {
    void cleanUp().finally(() => process.kill(process.pid, signal));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    process.env.GATEWAY_RATE_SESSION = String(SESSION_BUDGET_PER_MINUTE);
    shop = await startShop({
      dataDir,
      portBase: await freePortBase(6 + REPLICAS),
      replicas: REPLICAS,
      postgres: network.postgres,
      svidLifetimeSeconds: SVID_SECONDS,
      replicaPlacement: (index) => network.placement(index),
      onProgress: progress,
      onSupervision: (line) => progress(`supervision: ${line}`),
    });
    const running = shop;
    progress(`replicas: ${running.replicas.join(', ')}`);
    const password = (name: string) => running.users[name]?.password ?? '';
    const gateway = await stolenCredentials(running, 'gateway');
    const orders = await stolenCredentials(running, 'orders');
    const bobToken = await capturedTxnToken(running, gateway, 'bob', password('bob'));
    // One after the other: parallel sign-ins of one account are throttled (as they should be).
    const browsers: Awaited<ReturnType<typeof signedIn>>[] = [];
    for (let worker = 0; worker < WORKERS; worker += 1)
      browsers.push(await signedIn(running, 'alice', password('alice')));

    const recovery = recoveryProbes(running, progress);
    // At most 90 orders of each item in all (each has 100 in stock): a longer drill orders less often.
    const orderEveryMs = Math.max(ORDER_EVERY_MS, Math.ceil((durationMs * WORKERS) / (90 * ITEMS.length)));
    const started = Date.now();
    const counts = { requests: 0, failed: 0 };
    const load = Promise.all(
      browsers.map(async ({ browser, csrf }, worker) => {
        // A paced load: lists, and an order every 400 ms per browser, the items in turn (the stock of each,
        // 100, outlasts the drill). Every order crosses gateway → orders → shipping, inventory, payments.
        let nextOrderAt = started + worker * 100;
        let placed = 0;
        for (let next = started + worker * 10; Date.now() - started < durationMs; next += REQUEST_EVERY_MS) {
          await sleep(next - Date.now());
          const placing = Date.now() >= nextOrderAt;
          if (placing) nextOrderAt += orderEveryMs;
          const item = ITEMS[(placed + worker) % ITEMS.length] as string;
          if (placing) placed += 1;
          counts.requests += 1;
          try {
            const answer = placing
              ? await browser.request(`${running.urls.gateway}/api/orders`, {
                  method: 'POST',
                  json: { item, quantity: 1 },
                  headers: { 'x-csrf-token': csrf },
                })
              : await browser.request(`${running.urls.gateway}/api/orders`);
            if (answer.status < 200 || answer.status > 299) {
              counts.failed += 1;
              problems.push(
                `at ${Date.now() - started} ms: ${placing ? 'POST' : 'GET'} /api/orders answered ${answer.status} ${JSON.stringify(answer.body).slice(0, 200)}`,
              );
            }
          } catch (error) {
            counts.failed += 1;
            problems.push(`at ${Date.now() - started} ms: no answer (${(error as Error).message})`);
          }
        }
      }),
    );

    await sleep(KILL_AT_MS - (Date.now() - started));
    progress('killing control plane r1 (SIGKILL)');
    await running.kill('controlPlane:1', { signal: 'SIGKILL' });
    const revokedAt = Date.now();
    // Through r2 only; the recovery probes' admin commands meanwhile ask every replica.
    const revoke = running.adminVia(
      running.replicas[2] ?? '',
      'revoke',
      'sub',
      'bob',
      '--reason',
      'ha drill: account taken over',
    );
    let revokeAnsweredMs = -1;
    void revoke.then(() => (revokeAnsweredMs = Date.now() - revokedAt));
    const enforced = await Promise.all([
      // Quantity 0: refused as revoked, or (before) as invalid by inventory's schema — no stock is taken.
      refusedAsRevoked(() =>
        call(`${running.urls.inventory}/reservations`, {
          method: 'POST',
          json: { item: 'tea', quantity: 0 },
          headers: { 'txn-token': bobToken },
          as: orders,
        }),
      ),
      refusedAsRevoked(() =>
        call(`${running.urls.orders}/orders`, { headers: { 'txn-token': bobToken }, as: gateway }),
      ),
      refusedAsRevoked(() =>
        call(`${running.urls.payments}/charges`, {
          method: 'POST',
          json: { orderId: 'ha-drill', amount: 1 },
          headers: { 'txn-token': bobToken },
          as: orders,
        }),
      ),
    ]);
    const revoked = await revoke;
    if (revoked.code !== 0) problems.push(`revoke through r2 failed: ${revoked.err.join(' ')}`);
    const revocationEnforcedMs = enforced.every((at) => at !== null)
      ? Math.max(...enforced.map((at) => (at as number) - revokedAt))
      : null;
    const each = enforced.map((at) => (at === null ? 'never' : `${at - revokedAt} ms`));
    progress(
      `revocation enforced after ${String(revocationEnforcedMs)} ms (inventory ${each[0]}, orders ${each[1]}, payments ${each[2]}; the revoke command answered after ${revokeAnsweredMs} ms)`,
    );

    await sleep(RESTART_AT_MS - (Date.now() - started));
    progress('restarting control plane r1');
    await running.restart('controlPlane:1');
    await load;
    for (const { browser } of browsers) await browser.close();
    progress(`load: ${counts.requests} requests, ${counts.failed} failed`);

    const recoveredAfterExpiry = await recovery;
    return { ...counts, revocationEnforcedMs, recoveredAfterExpiry, network: network.kind, problems };
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await cleanUp();
  }
}

/** Asks every 20 ms until the answer is a refusal for revocation; when it came, or null after 10 s. */
async function refusedAsRevoked(ask: () => Promise<{ status: number | null; body: Record<string, unknown> }>) {
  const until = Date.now() + 10_000;
  while (Date.now() < until) {
    const answer = await ask();
    // The token's revocation, not the calling service's (LOCKSTEP_ERR_PEER_REVOKED would be another story).
    if (answer.status === 401 && answer.body.error === 'LOCKSTEP_ERR_TXN_TOKEN_REVOKED') return Date.now();
    await sleep(20);
  }
  return null;
}

/**
 * Two workloads cut off from every control plane for longer than their SVIDs live. probe-p must
 * recover once a replica is reachable again; probe-v, revoked meanwhile, must be refused.
 */
async function recoveryProbes(shop: RunningShop, progress: (line: string) => void): Promise<boolean> {
  const target = new URL(shop.replicas[0] ?? shop.urls.controlPlane);
  const relay = await startTcpRelay({ target: { host: target.hostname, port: Number(target.port) } });
  const events: Record<string, AgentEvent[]> = { 'probe-p': [], 'probe-v': [] };
  const agents: WorkloadAgent[] = [];
  try {
    for (const service of ['probe-p', 'probe-v'] as const) {
      const [token = ''] = await shop.admin('join-token', 'create', service);
      agents.push(
        await joinAsWorkload({
          url: `https://127.0.0.1:${relay.port}`,
          trustDomain: TRUST_DOMAIN,
          joinToken: token,
          service,
          onEvent: (event) => events[service]?.push(event),
        }),
      );
    }
    const expiresAt = Math.max(...agents.map((agent) => agent.credentials.expiresAt.getTime()));
    await relay.cut();
    progress('probes joined; their only way to the control plane is cut');
    await shop.admin('revoke', 'spiffeId', `spiffe://${TRUST_DOMAIN}/svc/probe-v`, '--reason', 'ha drill');
    await sleep(expiresAt + 5_000 - Date.now());
    await relay.restore();
    progress('both probe SVIDs expired 5 s ago; the way is restored');
    const deadline = Date.now() + 20_000;
    const outcome = (service: string, kind: AgentEvent['kind']) =>
      events[service]?.find((event) => event.kind === kind);
    while (Date.now() < deadline && (!outcome('probe-p', 'recovered') || !outcome('probe-v', 'recovery-refused')))
      await sleep(100);
    const recovered = outcome('probe-p', 'recovered') !== undefined;
    const refused = outcome('probe-v', 'recovery-refused');
    const bundle = await fetchBundle(shop.replicas[2] ?? shop.urls.controlPlane);
    // The recovered leaf (recovered through r0), its intermediate, and a root of r2's bundle: one CA for every replica.
    const [leaf, intermediate] = certificates(agents[0]?.credentials.chainPem ?? '');
    const verifies =
      leaf !== undefined &&
      intermediate !== undefined &&
      leaf.verify(intermediate.publicKey) &&
      bundle.some((root) => intermediate.verify(root.publicKey));
    progress(
      `recovery: probe-p ${recovered ? `recovered (its chain verifies against r2's bundle: ${verifies})` : 'did NOT recover'}; ` +
        `probe-v ${refused === undefined ? 'was NOT refused' : `refused (${refused.kind === 'recovery-refused' ? refused.code : ''})`}`,
    );
    return (
      recovered &&
      verifies &&
      refused !== undefined &&
      refused.kind === 'recovery-refused' &&
      refused.code === 'LOCKSTEP_CP_WORKLOAD_REVOKED'
    );
  } finally {
    for (const agent of agents) await agent.close();
    await relay.close();
  }
}

async function fetchBundle(url: string): Promise<X509Certificate[]> {
  const dispatcher = new Agent({ connect: { rejectUnauthorized: false } });
  try {
    return certificates(await (await request(`${url}/v1/bundle`, { dispatcher })).body.text());
  } finally {
    await dispatcher.close();
  }
}

function certificates(pem: string): X509Certificate[] {
  return (pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map(
    (block) => new X509Certificate(block),
  );
}

/** A database of the drill's own on the server of `url`: created now, dropped at the end. */
async function createDatabase(url: string): Promise<{ name: string; url: string; drop(): Promise<void> }> {
  const name = `lockstep_ha_${process.pid}_${Date.now().toString(36)}`;
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const own = new URL(url);
  own.pathname = `/${name}`;
  return {
    name,
    url: own.href,
    async drop() {
      const dropper = new pg.Client({ connectionString: url });
      await dropper.connect();
      try {
        await dropper.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await dropper.end();
      }
    },
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
}
