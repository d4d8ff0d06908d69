/**
 * Attacks on the sign-in page, over real HTTPS with real scrypt checks, against two control-plane
 * replicas sharing one store — SQLite (two handles on one file) and PostgreSQL (LOCKSTEP_TEST_PG,
 * default postgres://postgres@127.0.0.1:5432/test; skipped with a message when unreachable, a
 * failure when LOCKSTEP_REQUIRE_PG=1). Every client comes from 127.0.0.1: attacker and users share
 * one address, as behind an office NAT.
 *
 *   - parallel guesses at one account, split over both replicas, get no more password checks than
 *     the lock allows, and the right password is refused once the account is locked
 *   - an attack on one account holds back neither the other users of the address nor the account's
 *     own user in a browser that signed in before
 *   - spraying many accounts from one address: each account is tried once, then held (a held
 *     attempt adds no row); a new user of the address and known browsers are not held
 *   - a spray that never stops keeps no other user of the address out
 *   - a revoked (or disabled) user with a session gets the refusal page, never a 500, and the
 *     session is ended
 *
 * and, on one replica with clients at several loopback addresses (127.0.0.0/8 is all loopback on
 * Linux), the bound on password checks in progress (check-slots.ts):
 *
 *   - a burst of made-up names from one address gets at most `perNetwork` checks at once; the rest
 *     are answered 429 at once, with no row written and no password checked, while a user at
 *     another address signs in
 *   - bursts from several addresses get at most `total` checks at once on the replica
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { createTestBrowser, testPostgres, type Page } from '@lockstep/testkit';
import {
  createUser,
  openKeyRing,
  openPostgresStore,
  openSqliteStore,
  openWorkloadCa,
  startControlPlane,
  subscribeLogins,
  type ControlPlaneStore,
  type LoginEvent,
  type LockoutPolicy,
  type PasswordCheckLimits,
  type RunningControlPlane,
  type WorkloadCa,
} from '../src/index.ts';
import { authorizationRequest, type RelyingParty } from './support/oidc-client.ts';

const postgres = await testPostgres();
const scratch = mkdtempSync(join(tmpdir(), 'lockstep-sign-in-'));
after(async () => {
  rmSync(scratch, { recursive: true, force: true });
  await postgres.cleanup();
});

const REDIRECT = 'https://gateway.shop.test/callback';
const RESOURCE = 'https://gateway.shop.test/api';
// Locks that outlast the test: nothing here may pass by waiting.
const POLICY: LockoutPolicy = {
  accountFreeAttempts: 5,
  addressFreeAccounts: 6,
  addressLockMs: 60_000,
  baseLockMs: 60_000,
  maxLockMs: 900_000,
  windowMs: 3_600_000,
};
// Every client of the lockout tests is at 127.0.0.1, standing for many users behind one NAT: with the
// default bound on checks in progress (2 per network) most of a parallel burst would be answered
// "busy" before the lockout saw it, and the store's atomicity would go untested. So the bound is
// raised past any burst here; it has tests of its own below.
const UNBOUNDED_CHECKS: PasswordCheckLimits = { perNetwork: 64, total: 64 };
// Not containing the name (the password policy refuses that).
const PASSWORD = (name: string) => `right passphrase ${createHash('sha256').update(name).digest('hex').slice(0, 16)}`;
const stopAt = (url: URL) => url.href.startsWith(REDIRECT);
const alert = (page: Page) => /role="alert">([^<]*)</.exec(page.body)?.[1];

type LoginFailureRow = { key: string; failures: number; lastFailureAt: number };

/** `open()`: two stores on one database, and a reader of its login_failures table, row by row. */
const backends: {
  name: string;
  skip: string | false;
  open(): Promise<{ stores: [ControlPlaneStore, ControlPlaneStore]; rows(): Promise<LoginFailureRow[]> }>;
}[] = [
  {
    name: 'sqlite',
    skip: false,
    async open() {
      const file = join(scratch, `${randomBytes(4).toString('hex')}.db`);
      const stores: [ControlPlaneStore, ControlPlaneStore] = [openSqliteStore(file), openSqliteStore(file)];
      return {
        stores,
        async rows() {
          const reader = new DatabaseSync(file, { readOnly: true });
          try {
            return (reader.prepare('SELECT * FROM login_failures ORDER BY key').all() as Record<string, unknown>[]).map(
              (row) => ({
                key: String(row.key),
                failures: Number(row.failures),
                lastFailureAt: Number(row.last_failure_at),
              }),
            );
          } finally {
            reader.close();
          }
        },
      };
    },
  },
  {
    name: 'postgres',
    skip: postgres.skip,
    async open() {
      const schema = postgres.schema();
      const first = await openPostgresStore({ connectionString: postgres.url, schema });
      return {
        stores: [first, await openPostgresStore({ connectionString: postgres.url, schema })],
        async rows() {
          const reader = new pg.Client({ connectionString: postgres.url });
          await reader.connect();
          try {
            return (
              (await reader.query(`SELECT * FROM ${schema}.login_failures ORDER BY key`)).rows as Record<
                string,
                unknown
              >[]
            ).map((row) => ({
              key: String(row.key),
              failures: Number(row.failures),
              lastFailureAt: Number(row.last_failure_at),
            }));
          } finally {
            await reader.end();
          }
        },
      };
    },
  },
];

for (const backend of backends) {
  describe(`sign-in attacks on two replicas (${backend.name})`, { skip: backend.skip }, () => {
    let ca: WorkloadCa;
    let stores: ControlPlaneStore[] = [];
    let rows: () => Promise<LoginFailureRow[]> = async () => [];
    let replicas: RunningControlPlane[] = [];
    const events: LoginEvent[] = [];
    let stopEvents = () => {};
    const browsers: ReturnType<typeof createTestBrowser>[] = [];

    before(async () => {
      const keyDir = join(scratch, `keys-${backend.name}`);
      ca = await openWorkloadCa({ trustDomain: 'shop.test', keyDir });
      ({ stores, rows } = await backend.open());
      const cookieKeys = [randomBytes(32).toString('base64url')];
      for (const store of stores) {
        replicas.push(
          await startControlPlane({
            ca,
            store,
            idp: {
              keys: await openKeyRing(keyDir, 'idp', { retainMs: 3_600_000 }),
              cookieKeys,
              lockout: POLICY,
              passwordChecks: UNBOUNDED_CHECKS,
              clients: [
                {
                  client_id: 'gateway',
                  client_secret: 'gateway-secret-for-tests-only',
                  client_name: 'Lockstep Shop',
                  redirect_uris: [REDIRECT],
                },
              ],
              resource: { indicator: RESOURCE, scopes: ['orders:read'] },
            },
          }),
        );
      }
      const names = [
        'victor',
        'wendy',
        'oscar',
        'olga',
        'trudy',
        'dora',
        'yvonne',
        'xavier',
        'carol',
        'erin',
        'frank',
        ...Array.from({ length: 5 }, (_, index) => `staff-${index}`),
      ];
      for (const username of names)
        await createUser(stores[0] as ControlPlaneStore, {
          username,
          password: PASSWORD(username),
          roles: ['customer'],
        });
      stopEvents = subscribeLogins((event) => events.push(event));
    });

    after(async () => {
      stopEvents();
      await Promise.all(browsers.map((browser) => browser.close()));
      for (const replica of replicas) await replica.close();
      for (const store of stores) await store.close();
      replicas = [];
      stores = [];
    });

    const rpOf = (replica: RunningControlPlane): RelyingParty => ({
      issuer: replica.idp?.issuer ?? '',
      clientId: 'gateway',
      clientSecret: 'gateway-secret-for-tests-only',
      redirectUri: REDIRECT,
      resource: RESOURCE,
      ca: ca.bundlePem,
    });

    function browser() {
      const created = createTestBrowser({ ca: ca.bundlePem });
      browsers.push(created);
      return created;
    }

    /**
     * One sign-in in `client` (a fresh browser by default) at `replica`: the page it ends on (callback:
     * status 0). `prompt=login` makes a browser with a session sign in again, as when its session has expired.
     */
    async function attempt(
      username: string,
      password: string,
      options: { replica?: number; client?: ReturnType<typeof browser> } = {},
    ): Promise<Page> {
      const client = options.client ?? browser();
      const login = await client.open(
        authorizationRequest(rpOf(replicas[options.replica ?? 0] as RunningControlPlane), 'openid', { prompt: 'login' })
          .url,
        { stopAt },
      );
      assert.equal(login.status, 200, `the sign-in page: ${login.status} ${alert(login) ?? login.body.slice(0, 200)}`);
      return client.submit(login, { username, password }, { stopAt });
    }

    const signedIn = (page: Page) => page.url.startsWith(REDIRECT) && new URL(page.url).searchParams.has('code');
    const checked = (username: string) =>
      events.filter(
        (event) => event.username === username && (event.outcome === 'failure' || event.outcome === 'success'),
      ).length;

    it('Attack: 24 parallel wrong guesses over two replicas get 5 password checks; then the right password is refused', async () => {
      const pages = await Promise.all(
        Array.from({ length: 24 }, (_, index) =>
          attempt('victor', `wrong guess number ${index}`, { replica: index % 2 }),
        ),
      );
      assert.equal(checked('victor'), POLICY.accountFreeAttempts, 'no parallel attempt is checked past the limit');
      assert.equal(pages.filter((page) => page.status === 401).length, POLICY.accountFreeAttempts - 1);
      assert.equal(
        pages.filter((page) => page.status === 429).length,
        24 - POLICY.accountFreeAttempts + 1,
        'the fifth failure locks; the rest were held without a check',
      );
      assert.ok(
        pages.every((page) => page.status === 401 || page.status === 429),
        pages.map((page) => page.status).join(' '),
      );
      for (const replica of [0, 1]) {
        const right = await attempt('victor', PASSWORD('victor'), { replica });
        assert.equal(right.status, 429, 'the right password does not get through the lock');
        const seconds = Number(right.headers['retry-after']);
        assert.ok(seconds > 0 && seconds <= 60, `retry after ${seconds} s: what is left of the first 60 s lock`);
        assert.equal(alert(right), `Too many failed sign-in attempts. Try again in ${seconds} seconds.`);
      }
      assert.equal(checked('victor'), POLICY.accountFreeAttempts, 'and a held attempt is not checked');
      const failures = await stores[0]?.loginFailures('account:victor');
      assert.equal(
        failures?.failures,
        POLICY.accountFreeAttempts,
        'held attempts count nothing: a stranger cannot extend the lock',
      );
    });

    it('Attack: the right password among 24 parallel wrong ones is checked only within the limit', async () => {
      const right = Math.floor(Math.random() * 25);
      const pages = await Promise.all(
        Array.from({ length: 25 }, (_, index) =>
          attempt('oscar', index === right ? PASSWORD('oscar') : `wrong guess number ${index}`, { replica: index % 2 }),
        ),
      );
      // Checks happen in the order the reservations land: the right one signs in only if it is among the
      // first five; a success clears the count, so at most five more may follow it.
      const success = signedIn(pages[right] as Page);
      assert.ok(checked('oscar') <= POLICY.accountFreeAttempts * (success ? 2 : 1), `${checked('oscar')} checks`);
      if (!success) assert.equal(pages[right]?.status, 429, 'refused once locked');
      assert.ok(pages.filter((page) => page.status === 429).length >= 25 - POLICY.accountFreeAttempts * 2);
    });

    it("Attack: an attack on one account does not hold back another user of the same address, nor the account's user in a browser that signed in before", async () => {
      const olgaBrowser = browser();
      assert.ok(
        signedIn(await attempt('olga', PASSWORD('olga'), { client: olgaBrowser })),
        'olga signs in before the attack',
      );
      const attack = await Promise.all(
        Array.from({ length: 20 }, (_, index) =>
          attempt('olga', `wrong guess number ${index}`, { replica: index % 2 }),
        ),
      );
      assert.ok(
        attack.some((page) => page.status === 429),
        'the account is locked for strangers',
      );
      assert.equal(
        (await attempt('olga', PASSWORD('olga'))).status,
        429,
        'also against the right password from a new browser',
      );

      assert.ok(signedIn(await attempt('wendy', PASSWORD('wendy'))), "wendy, on the attacker's address, signs in");
      // (The test browser keeps cookies per host and port, and each replica has a port of its own.)
      assert.ok(
        signedIn(await attempt('olga', PASSWORD('olga'), { client: olgaBrowser })),
        'olga signs in from her own browser',
      );
      const wrongFromHers = await attempt('olga', 'her own typo here', { client: olgaBrowser });
      assert.equal(wrongFromHers.status, 401, 'her browser has a count of its own, with its own free attempts');
    });

    it('Attack: spraying many accounts from one address gets one try at each, then is held without a row written; a new user of the address and known browsers are not held', async () => {
      // A clean count for the address, then typos followed by success: they count for nothing.
      await stores[0]?.clearLoginFailures('address:127.0.0.1');
      const dora = browser();
      assert.equal((await attempt('dora', 'not quite her passphrase', { client: dora })).status, 401);
      assert.ok(signedIn(await attempt('dora', PASSWORD('dora'), { client: dora })));
      const yvonne = browser();
      assert.ok(signedIn(await attempt('yvonne', PASSWORD('yvonne'), { client: yvonne })));
      assert.equal(
        (await stores[0]?.loginFailures('address:127.0.0.1'))?.failures ?? 0,
        0,
        "other users' typos do not count towards the address",
      );

      const targets = [
        'yvonne',
        ...Array.from({ length: 5 }, (_, index) => `staff-${index}`),
        ...Array.from({ length: 7 }, (_, index) => `no-such-user-${index}`),
      ];
      const earlier = new Map(targets.map((username) => [username, checked(username)]));
      const checkedNow = () => targets.filter((username) => checked(username) - (earlier.get(username) ?? 0) !== 1);
      const first = await Promise.all(
        targets.map((username, index) => attempt(username, 'Summer2026!Summer', { replica: index % 2 })),
      );
      assert.deepEqual(checkedNow(), [], 'the address never holds a first attempt at an account');
      assert.ok(
        ((await stores[0]?.loginFailures('address:127.0.0.1'))?.failures ?? 0) >= POLICY.addressFreeAccounts,
        'the address is spraying now',
      );
      for (const page of first)
        assert.match(
          String(alert(page)),
          /^The user name or password is incorrect\./,
          'real and unknown accounts look alike',
        );

      const before = await rows();
      const again = await Promise.all(
        targets.map((username, index) => attempt(username, 'Autumn2026!Autumn', { replica: index % 2 })),
      );
      for (const page of again) {
        assert.equal(page.status, 429);
        const seconds = Number(page.headers['retry-after']);
        assert.ok(
          seconds > 0 && seconds <= POLICY.addressLockMs / 1000,
          `retry after ${seconds} s: at most addressLockMs`,
        );
        assert.equal(
          alert(page),
          `Too many failed sign-in attempts from your network. Try again in ${seconds} seconds.`,
        );
      }
      assert.deepEqual(checkedNow(), [], 'a second try from the address within addressLockMs checks no password');
      assert.deepEqual(await rows(), before, 'and writes nothing: no row added, no count or lock changed');

      assert.ok(
        signedIn(await attempt('xavier', PASSWORD('xavier'))),
        'a new user of the address, in a new browser, signs in at once',
      );
      assert.ok(
        signedIn(await attempt('yvonne', PASSWORD('yvonne'), { client: yvonne })),
        'a sprayed user in a browser that signed in before is not held',
      );
      assert.equal(
        (await attempt('yvonne', PASSWORD('yvonne'))).status,
        429,
        'in a new browser she waits like her attacker: her account is the one attacked from here',
      );
    });

    it('Attack: a spray from the address that never stops keeps no other user of it out; a typo costs at most addressLockMs', async () => {
      let spraying = true;
      const sprayed: string[] = [];
      // Two attackers, one per replica, each trying a new made-up name as soon as the last answer came.
      const attackers = [0, 1].map(async (replica) => {
        const client = browser();
        while (spraying) {
          sprayed.push(`nat-ghost-${sprayed.length}`);
          await attempt(sprayed.at(-1) as string, 'Winter2026!Winter', { replica, client });
        }
      });
      try {
        await stores[0]?.clearLoginFailures('address:127.0.0.1');
        const deadline = Date.now() + 60_000;
        while (((await stores[0]?.loginFailures('address:127.0.0.1'))?.failures ?? 0) < POLICY.addressFreeAccounts) {
          assert.ok(
            Date.now() < deadline,
            `the address is not spraying after a minute (${sprayed.length} names tried)`,
          );
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
        for (const [index, username] of ['carol', 'erin', 'frank'].entries()) {
          assert.ok(
            signedIn(await attempt(username, PASSWORD(username), { replica: index % 2 })),
            `${username}, right password, new browser: signed in at the first attempt`,
          );
        }
        const carol = browser();
        assert.equal(
          (await attempt('carol', 'her passphrase, nearly', { client: carol })).status,
          429,
          'a typo while the address is spraying',
        );
        const held = await attempt('carol', PASSWORD('carol'), { client: carol, replica: 1 });
        assert.equal(held.status, 429);
        assert.match(String(alert(held)), /from your network/);
        assert.ok(
          Number(held.headers['retry-after']) <= POLICY.addressLockMs / 1000,
          `then a wait of at most addressLockMs, whatever the attackers do: ${held.headers['retry-after']} s`,
        );
      } finally {
        spraying = false;
        await Promise.all(attackers);
      }
      assert.ok(sprayed.length > POLICY.addressFreeAccounts, `${sprayed.length} names sprayed meanwhile`);
      assert.deepEqual(
        sprayed.filter((username) => checked(username) !== 1),
        [],
        'each checked once, as every first attempt is',
      );
    });

    it('Attack: a revoked or disabled user with a session gets the refusal page, never a 500, and the session ends', async () => {
      const written: string[] = [];
      const write = process.stderr.write.bind(process.stderr);
      process.stderr.write = ((chunk: string | Uint8Array, ...rest: never[]) => {
        written.push(String(chunk));
        return write(chunk, ...rest);
      }) as typeof process.stderr.write;
      try {
        for (const [username, take] of [
          [
            'trudy',
            () => replicas[0]?.revoke({ kind: 'sub', value: 'trudy', reason: 'left the company', actor: 'cli' }),
          ],
          ['staff-4', () => stores[0]?.setUserDisabled('staff-4', Date.now())],
        ] as const) {
          const client = browser();
          const rp = rpOf(replicas[0] as RunningControlPlane);
          // The spraying tests left the address spraying, and staff-4 sprayed from it.
          await stores[0]?.clearLoginFailures('address:127.0.0.1');
          assert.ok(signedIn(await attempt(username, PASSWORD(username), { client })), `${username} signs in`);
          const sso = await client.open(authorizationRequest(rp, 'openid').url, { stopAt });
          assert.ok(signedIn(sso), 'single sign-on while the account is fine');
          await take();

          const refused = await client.open(authorizationRequest(rp, 'openid').url, { stopAt });
          assert.equal(refused.status, 403, `${username}: ${refused.status} ${alert(refused) ?? ''}`);
          assert.equal(alert(refused), 'This account cannot sign in. Contact your administrator.');
          assert.ok(
            events.some(
              (event) =>
                event.username === username &&
                event.outcome === 'refused' &&
                /session was ended/.test(String(event.reason)),
            ),
          );
          const silent = await client.open(authorizationRequest(rp, 'openid', { prompt: 'none' }).url, { stopAt });
          assert.equal(
            new URL(silent.url).searchParams.get('error'),
            'login_required',
            'the session no longer signs anyone in',
          );
          const again = await attempt(username, PASSWORD(username), { client, replica: 1 });
          assert.equal(again.status, 403, 'the right password: the same refusal as in a fresh browser');
          assert.equal(alert(again), 'This account cannot sign in. Contact your administrator.');

          const page = await client.open(authorizationRequest(rp, 'openid').url, { stopAt });
          assert.equal(page.status, 200, 'the ended session leaves a plain sign-in page');
          assert.ok(
            signedIn(await client.submit(page, { username: 'wendy', password: PASSWORD('wendy') }, { stopAt })),
            'where someone else can sign in',
          );
        }
      } finally {
        process.stderr.write = write;
      }
      assert.deepEqual(
        written.filter((line) => /TypeError|lockstep identity provider|internal error/.test(line)),
        [],
        'nothing thrown in the log',
      );
    });
  });
}

// Small bounds, so that a burst of a few dozen shows both.
const CHECKS: PasswordCheckLimits = { perNetwork: 2, total: 4 };
const BUSY = 'Too many sign-in attempts are being checked right now. Try again in a moment.';

for (const backend of backends) {
  describe(`bounded password checks on one replica (${backend.name})`, { skip: backend.skip }, () => {
    let ca: WorkloadCa;
    let stores: ControlPlaneStore[] = [];
    let rows: () => Promise<LoginFailureRow[]> = async () => [];
    let replica: RunningControlPlane | undefined;
    const events: LoginEvent[] = [];
    let stopEvents = () => {};
    const browsers: ReturnType<typeof createTestBrowser>[] = [];
    // Checks in progress as seen from outside: from an attempt's reservation in the store (its slot is
    // taken before) to its login event (published after the slot is given back); user name → network.
    const inProgress = new Map<string, string>();
    let most = { total: 0, byNetwork: new Map<string, number>() };

    /** The store, reporting each reservation of an attempt to `inProgress`. */
    function observed(store: ControlPlaneStore): ControlPlaneStore {
      return new Proxy(store, {
        get(target, property) {
          const value = Reflect.get(target, property, target) as unknown;
          if (typeof value !== 'function') return value;
          if (property !== 'reserveLoginAttempt') return value.bind(target);
          const reserve: ControlPlaneStore['reserveLoginAttempt'] = (claims, now) => {
            const pair = /^address-account:(\S+) (.*)$/.exec(claims[1]?.key ?? '');
            if (pair !== null) {
              inProgress.set(pair[2] as string, pair[1] as string);
              const networks = [...inProgress.values()];
              most.total = Math.max(most.total, networks.length);
              const ours = networks.filter((network) => network === pair[1]).length;
              most.byNetwork.set(pair[1] as string, Math.max(most.byNetwork.get(pair[1] as string) ?? 0, ours));
            }
            return target.reserveLoginAttempt(claims, now);
          };
          return reserve;
        },
      });
    }

    before(async () => {
      const keyDir = join(scratch, `keys-checks-${backend.name}`);
      ca = await openWorkloadCa({ trustDomain: 'shop.test', keyDir });
      ({ stores, rows } = await backend.open());
      replica = await startControlPlane({
        ca,
        store: observed(stores[0] as ControlPlaneStore),
        idp: {
          keys: await openKeyRing(keyDir, 'idp', { retainMs: 3_600_000 }),
          cookieKeys: [randomBytes(32).toString('base64url')],
          lockout: POLICY,
          passwordChecks: CHECKS,
          clients: [
            {
              client_id: 'gateway',
              client_secret: 'gateway-secret-for-tests-only',
              client_name: 'Lockstep Shop',
              redirect_uris: [REDIRECT],
            },
          ],
          resource: { indicator: RESOURCE, scopes: ['orders:read'] },
        },
      });
      for (const username of ['wendy', 'xavier', ...Array.from({ length: 4 }, (_, index) => `staff-${index}`)]) {
        await createUser(stores[0] as ControlPlaneStore, {
          username,
          password: PASSWORD(username),
          roles: ['customer'],
        });
      }
      stopEvents = subscribeLogins((event) => {
        inProgress.delete(event.username);
        events.push(event);
      });
    });

    after(async () => {
      stopEvents();
      await Promise.all(browsers.map((browser) => browser.close()));
      await replica?.close();
      for (const store of stores) await store.close();
      stores = [];
    });

    /** A fresh browser at `address` on the sign-in page, ready to submit: the burst's requests leave together. */
    async function signInPage(address: string) {
      const client = createTestBrowser({ ca: ca.bundlePem, localAddress: address });
      browsers.push(client);
      const rp: RelyingParty = {
        issuer: replica?.idp?.issuer ?? '',
        clientId: 'gateway',
        clientSecret: 'gateway-secret-for-tests-only',
        redirectUri: REDIRECT,
        resource: RESOURCE,
        ca: ca.bundlePem,
      };
      const page = await client.open(authorizationRequest(rp, 'openid', { prompt: 'login' }).url, { stopAt });
      assert.equal(page.status, 200, `the sign-in page: ${page.status} ${alert(page) ?? page.body.slice(0, 200)}`);
      return (username: string, password: string) => client.submit(page, { username, password }, { stopAt });
    }

    const signedIn = (page: Page) => page.url.startsWith(REDIRECT) && new URL(page.url).searchParams.has('code');
    const checked = (username: string) =>
      events.filter(
        (event) => event.username === username && (event.outcome === 'failure' || event.outcome === 'success'),
      ).length;
    const busy = (username: string) =>
      events.filter((event) => event.username === username && event.outcome === 'busy');
    const rowsOf = (usernames: readonly string[], all: readonly LoginFailureRow[]) =>
      all.filter((row) =>
        usernames.some((username) => row.key === `account:${username}` || row.key.endsWith(` ${username}`)),
      );

    /** Each busy answer: 429, Retry-After 1, the same words for every name; no check, no row. */
    async function assertBusyAnswers(usernames: readonly string[], pages: readonly Page[], by: string | null) {
      const answers = new Set<string>();
      for (const [index, username] of usernames.entries()) {
        const page = pages[index] as Page;
        if (busy(username).length === 0) continue;
        answers.add(JSON.stringify([page.status, page.headers['retry-after'], alert(page)]));
        assert.equal(checked(username), 0, `${username}: answered busy and checked`);
        if (by !== null) assert.equal(busy(username)[0]?.reason, by);
      }
      assert.deepEqual(
        [...answers],
        [JSON.stringify([429, '1', BUSY])],
        'real and made-up names get one and the same answer',
      );
      assert.deepEqual(
        rowsOf(
          usernames.filter((username) => busy(username).length > 0),
          await rows(),
        ),
        [],
        'a busy answer writes no row',
      );
    }

    it('Attack: 40 parallel sign-ins with distinct names from one address get at most 2 checks at once, the rest 429 with no row written; a user at another address signs in meanwhile', async () => {
      // Mostly made-up names, and a few real accounts: the answer must not tell them apart.
      const names = [
        ...Array.from({ length: 36 }, (_, index) => `burst-${index}`),
        ...Array.from({ length: 4 }, (_, index) => `staff-${index}`),
      ];
      const burst = await Promise.all(names.map(() => signInPage('127.0.0.1')));
      const colleague = await signInPage('127.0.0.2');
      most = { total: 0, byNetwork: new Map() };
      const [user, ...pages] = await Promise.all([
        colleague('wendy', PASSWORD('wendy')),
        ...burst.map((submit, index) => submit(names[index] as string, 'Spring2026!Spring')),
      ]);

      assert.ok(
        signedIn(user as Page),
        `wendy, at 127.0.0.2, signs in during the burst: ${user?.status} ${alert(user as Page) ?? ''}`,
      );
      assert.ok(
        (most.byNetwork.get('127.0.0.1') ?? 0) <= CHECKS.perNetwork,
        `${most.byNetwork.get('127.0.0.1')} checks from 127.0.0.1 at once`,
      );
      const refused = names.filter((username) => busy(username).length > 0);
      const passed = names.filter((username) => checked(username) === 1);
      assert.equal(refused.length + passed.length, names.length, 'each name either checked once or answered busy');
      assert.ok(refused.length > 0 && passed.length > 0, `${passed.length} checked, ${refused.length} busy`);
      await assertBusyAnswers(names, pages, 'network');
      const written = rowsOf(passed, await rows());
      for (const username of passed)
        assert.ok(
          written.some((row) => row.key === `account:${username}`),
          `${username} was checked, and counted`,
        );

      const again = await signInPage('127.0.0.1');
      assert.ok(
        signedIn(await again('xavier', PASSWORD('xavier'))),
        'once the burst is answered, a user at its address signs in',
      );
    });

    it('Attack: parallel sign-ins from 8 addresses get at most 4 checks at once on the replica, and at most 2 per address', async () => {
      const addresses = Array.from({ length: 8 }, (_, index) => `127.0.0.${10 + index}`);
      const names = addresses.flatMap((_, address) =>
        Array.from({ length: 3 }, (_, index) => `spread-${address}-${index}`),
      );
      const opened = await Promise.all(names.map((_, index) => signInPage(addresses[Math.floor(index / 3)] as string)));
      most = { total: 0, byNetwork: new Map() };
      const pages = await Promise.all(
        opened.map((submit, index) => submit(names[index] as string, 'Spring2026!Spring')),
      );

      assert.ok(most.total <= CHECKS.total, `${most.total} checks at once on the replica`);
      for (const [network, count] of most.byNetwork)
        assert.ok(count <= CHECKS.perNetwork, `${count} checks from ${network} at once`);
      assert.ok(
        names.some((username) => busy(username)[0]?.reason === 'replica'),
        "the replica's bound answered some attempts",
      );
      assert.equal(
        names.filter((username) => busy(username).length > 0 || checked(username) === 1).length,
        names.length,
      );
      await assertBusyAnswers(names, pages, null);

      const later = await signInPage('127.0.0.20');
      assert.ok(signedIn(await later('wendy', PASSWORD('wendy'))), 'every slot is free again afterwards');
    });
  });
}
