/**
 * The sealed key vault over both stores: two vaults on one database are two replicas. PostgreSQL is found
 * at LOCKSTEP_TEST_PG (default postgres://postgres@127.0.0.1:5432/test); without it its half is skipped
 * with a message, unless LOCKSTEP_REQUIRE_PG=1 (CI), where it fails.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import pg from 'pg';
import { testPostgres } from '@lockstep/testkit';
import { openPostgresStore } from '../store/postgres-store.ts';
import { openSqliteStore } from '../store/sqlite-store.ts';
import type { ControlPlaneStore } from '../store/store.ts';
import { KekError, parseKek, type Kek } from './kek.ts';
import type { KeyVault } from './key-vault.ts';
import { KeyDocumentError, open } from './sealed.ts';
import { rewrapKeyDocuments, sealedKeyVault } from './sealed-key-vault.ts';
import type { GenerationsFile } from './vault-generations.ts';

const postgres = await testPostgres();
const scratch = mkdtempSync(join(tmpdir(), 'lockstep-sealed-vault-'));
after(async () => {
  rmSync(scratch, { recursive: true, force: true });
  await postgres.cleanup();
});

const K1 = `k1 ${randomBytes(32).toString('base64url')}`;
const K2 = `k2 ${randomBytes(32).toString('base64url')}`;
const kek = parseKek(K1, 'test');

/** One database: stores on it (replicas), and SQL straight to it (what a database writer can do). */
interface Database {
  open(): Promise<ControlPlaneStore>;
  sql(statement: string): Promise<void>;
  readonly schema: string;
}

const backends: {
  name: string;
  skip: string | false;
  /** How soon a vault hears of another's write: PostgreSQL by notification (the re-read is out of the way). */
  rereadMs: number;
  database(): Database;
}[] = [
  {
    name: 'sqlite',
    skip: false,
    rereadMs: 50,
    database() {
      const path = join(scratch, `${randomBytes(6).toString('hex')}.db`);
      return {
        schema: 'main',
        open: async () => openSqliteStore(path),
        async sql(statement) {
          const { DatabaseSync } = await import('node:sqlite');
          const db = new DatabaseSync(path);
          try {
            db.exec(statement);
          } finally {
            db.close();
          }
        },
      };
    },
  },
  {
    name: 'postgres',
    skip: postgres.skip,
    rereadMs: 60_000,
    database() {
      const schema = postgres.schema();
      return {
        schema,
        open: () => openPostgresStore({ connectionString: postgres.url, schema }),
        async sql(statement) {
          const client = new pg.Client({ connectionString: postgres.url, options: `-c search_path=${schema}` });
          await client.connect();
          try {
            await client.query(statement);
          } finally {
            await client.end();
          }
        },
      };
    },
  },
];

const until = async (check: () => boolean, what: string, withinMs = 2_000) => {
  const deadline = performance.now() + withinMs;
  while (!check() && performance.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
  assert.ok(check(), `timed out waiting for ${what}`);
};

for (const backend of backends) {
  describe(`sealed key vault: ${backend.name}`, { skip: backend.skip }, () => {
    /** Two replicas: a store each on one database, a vault each. */
    const replicas = (body: (r: Replicas) => Promise<void>) => async () => {
      const database = backend.database();
      const stores = [await database.open(), await database.open()] as const;
      const vaults: KeyVault[] = [];
      const vault = async (index: 0 | 1, key: Kek = kek, generationsFile?: GenerationsFile) => {
        const opened = await sealedKeyVault({
          store: stores[index],
          kek: key,
          schema: database.schema,
          rereadMs: backend.rereadMs,
          ...(generationsFile === undefined ? {} : { generationsFile }),
        });
        vaults.push(opened);
        return opened;
      };
      try {
        await body({ database, stores, vault, a: await vault(0), b: await vault(1) });
      } finally {
        for (const opened of vaults) await opened.close();
        for (const store of stores) await store.close();
      }
    };

    it(
      'lets one replica read what another wrote, tells it soon, and never tells a writer of its own writes',
      replicas(async ({ a, b }) => {
        assert.equal(a.shared, true);
        assert.match(
          a.where,
          backend.name === 'postgres'
            ? /^PostgreSQL schema lockstep_test_[0-9a-f]+ \(key-encryption key k1\)$/
            : /^SQLite store \(key-encryption key k1\)$/,
        );
        const heardByA: string[] = [];
        const heardByB: { name: string; at: number }[] = [];
        a.watch((name) => heardByA.push(name));
        b.watch((name) => heardByB.push({ name, at: performance.now() }));
        assert.equal(await b.read('ring'), null);

        const wroteAt = performance.now();
        assert.equal(await a.write('ring', -1, 'ring v0'), true);
        assert.deepEqual(await b.read('ring'), { name: 'ring', generation: 0, text: 'ring v0' });
        await until(() => heardByB.length === 1, 'B hears of A’s write', 1_000);
        const heard = heardByB[0];
        assert.equal(heard?.name, 'ring');
        console.log(`B heard of A's write in ${((heard?.at ?? 0) - wroteAt).toFixed(0)} ms (${backend.name})`);

        assert.equal(await a.write('ring', 0, 'ring v1'), true);
        await until(() => heardByB.length === 2, 'B hears of the second write', 1_000);
        assert.deepEqual(await b.read('ring'), { name: 'ring', generation: 1, text: 'ring v1' });
        await new Promise((resolve) => setTimeout(resolve, 3 * Math.min(backend.rereadMs, 100)));
        assert.deepEqual(heardByA, [], 'A never hears of its own writes');
        assert.equal(heardByB.length, 2, 'each write told once');
      }),
    );

    it(
      'lets one of two replicas writing over one generation win; the other reads the winner and writes over it',
      replicas(async ({ a, b }) => {
        assert.equal(await a.write('ring', -1, 'v0'), true);
        const [fromA, fromB] = await Promise.all([a.write('ring', 0, 'v1 by A'), b.write('ring', 0, 'v1 by B')]);
        assert.notEqual(fromA, fromB, 'exactly one wins');
        const [winner, loser] = fromA ? [a, b] : [b, a];
        const newest = await loser.read('ring');
        assert.deepEqual(newest, { name: 'ring', generation: 1, text: fromA ? 'v1 by A' : 'v1 by B' });
        assert.equal(await loser.write('ring', 1, 'v2'), true);
        assert.equal(await winner.write('ring', 1, 'v2 stale'), false, 'a stale generation writes nothing');
        assert.equal((await winner.read('ring'))?.text, 'v2');
        // Two replicas creating one document: one creation only; the loser's listeners hear of the winner's
        // (a re-read while its own write was in flight left it to the write), the winner's of nothing.
        const heard: [string[], string[]] = [[], []];
        a.watch((name) => heard[0].push(name));
        b.watch((name) => heard[1].push(name));
        const created = await Promise.all([a.write('ca', -1, 'CA of A'), b.write('ca', -1, 'CA of B')]);
        assert.equal(created.filter(Boolean).length, 1, `one creation of ${JSON.stringify(created)}`);
        const [won, lost] = created[0] ? [heard[0], heard[1]] : [heard[1], heard[0]];
        await until(() => lost.includes('ca'), 'the loser hears of the winning creation', 1_000);
        // Only `ca` counts: a notification of the `ring` writes above may still arrive late, under load.
        assert.deepEqual(
          won.filter((name) => name === 'ca'),
          [],
        );
        assert.equal((await (created[0] ? b : a).read('ca'))?.text, created[0] ? 'CA of A' : 'CA of B');
      }),
    );

    it(
      'refuses a rollback: newer generations deleted from the database do not bring older keys back',
      replicas(async ({ a, b, database }) => {
        for (let generation = -1; generation < 3; generation += 1) {
          assert.equal(await a.write('ring', generation, `ring v${generation + 1}`), true);
        }
        assert.equal((await b.read('ring'))?.generation, 3);
        const heard: string[] = [];
        b.watch((name) => heard.push(name));

        await database.sql("DELETE FROM key_documents WHERE name = 'ring' AND generation > 1");
        const rollback = (what: string) => (error: unknown) => {
          assert.ok(error instanceof KeyDocumentError, `${what}: ${String(error)}`);
          assert.equal(error.code, 'LOCKSTEP_CP_KEYS_ROLLBACK');
          assert.match(error.message, /ring went back from generation 3 to generation 1/);
          return true;
        };
        await assert.rejects(b.read('ring'), rollback('B read generation 3'));
        await assert.rejects(a.read('ring'), rollback('A wrote generation 3'));
        assert.equal(await a.write('ring', 1, 'a fork'), false, 'no write over the older generation either');

        // Every generation gone: the same, not "none yet" (which would create new keys).
        await database.sql("DELETE FROM key_documents WHERE name = 'ring'");
        await assert.rejects(b.read('ring'), (error: unknown) => {
          assert.ok(error instanceof KeyDocumentError && error.code === 'LOCKSTEP_CP_KEYS_ROLLBACK');
          assert.match(error.message, /from generation 3 to none at all/);
          return true;
        });
        if (backend.name === 'sqlite') {
          // The periodic re-read (PostgreSQL's is out of the way here) tells listeners once, so that the
          // owner reads and refuses.
          await until(() => heard.includes('ring'), 'the rollback reported');
          await new Promise((resolve) => setTimeout(resolve, 200));
          assert.deepEqual(heard, ['ring'], 'reported once');
        }
      }),
    );

    it(
      'remembers the newest generations in a local file: a rollback made while a replica was down is refused at its restart',
      replicas(async ({ a, vault, database }) => {
        const file: GenerationsFile = {
          path: join(scratch, randomBytes(6).toString('hex'), 'keys', 'vault-generations.json'),
          scope: `db-1 schema ${database.schema}`,
        };
        const first = await vault(1, kek, file);
        for (let generation = -1; generation < 3; generation += 1)
          assert.equal(await first.write('ring', generation, `ring v${generation + 1}`), true);
        assert.equal(await a.write('ca', -1, 'ca v0'), true);
        assert.equal((await first.read('ca'))?.generation, 0);
        assert.equal(statSync(file.path).mode & 0o777, 0o600);
        assert.deepEqual(JSON.parse(readFileSync(file.path, 'utf8')), {
          version: 1,
          databases: { [file.scope]: { ring: 3, ca: 0 } },
        });
        await first.close();

        // While it is down, a database writer deletes the newest generations of the ring, and every one of the CA.
        await database.sql("DELETE FROM key_documents WHERE name = 'ring' AND generation > 1");
        await database.sql("DELETE FROM key_documents WHERE name = 'ca'");
        const restarted = await vault(1, kek, file);
        await assert.rejects(restarted.read('ring'), (error: unknown) => {
          assert.ok(error instanceof KeyDocumentError && error.code === 'LOCKSTEP_CP_KEYS_ROLLBACK', String(error));
          assert.match(error.message, /ring went back from generation 3 to generation 1/);
          assert.ok(error.message.includes(`remove ${file.path}`), error.message);
          return true;
        });
        await assert.rejects(restarted.read('ca'), /ca went back from generation 0 to none at all/);
        assert.equal(await restarted.write('ca', -1, 'a new CA'), false, 'and creates nothing in its place');

        // Without the file (or for another database), what the database holds now is taken as it is.
        assert.equal((await (await vault(1)).read('ring'))?.generation, 1);
        const elsewhere = await vault(1, kek, { ...file, scope: `db-2 schema ${database.schema}` });
        assert.equal((await elsewhere.read('ring'))?.generation, 1);
        assert.deepEqual(JSON.parse(readFileSync(file.path, 'utf8')).databases, {
          [file.scope]: { ring: 3, ca: 0 },
          [`db-2 schema ${database.schema}`]: { ring: 1 },
        });

        // An unreadable file refuses the start, saying what it is.
        writeFileSync(file.path, 'not json', { mode: 0o600 });
        await assert.rejects(
          vault(1, kek, file),
          /vault-generations\.json is unusable .* the newest generation of each key document/,
        );
      }),
    );

    it(
      'refuses a row moved to another generation, and a replica given another key-encryption key',
      replicas(async ({ a, vault, database }) => {
        assert.equal(await a.write('ring', -1, 'v0'), true);
        assert.equal(await a.write('ring', 0, 'v1'), true);
        const stranger = await vault(1, parseKek(K2, 'test'));
        await assert.rejects(stranger.read('ring'), (error: unknown) => {
          assert.ok(error instanceof KekError && error.code === 'LOCKSTEP_KEK_MISMATCH');
          assert.match(error.message, /sealed under key-encryption key k1.*give that key in LOCKSTEP_KEK_FILE/);
          return true;
        });
        // A database writer relabels generation 0 as the newest.
        await database.sql("DELETE FROM key_documents WHERE name = 'ring' AND generation = 1");
        await database.sql("UPDATE key_documents SET generation = 2 WHERE name = 'ring' AND generation = 0");
        await assert.rejects(a.read('ring'), (error: unknown) => {
          assert.ok(error instanceof KekError && error.code === 'LOCKSTEP_KEK_MISMATCH', String(error));
          return true;
        });
      }),
    );

    it(
      'rewraps every kept generation under a new key-encryption key, after which the old one can go',
      replicas(async ({ a, stores, database }) => {
        // A ring's older generations hold keys in use (today's current key is the previous generation's next).
        for (let generation = -1; generation < 2; generation += 1)
          assert.equal(await a.write('ring', generation, `ring v${generation + 1}`), true);
        assert.equal(await a.write('ca', -1, 'ca v0'), true);
        const rotated = parseKek(`${K2}\n${K1}`, 'test');
        const rotatedVault = await sealedKeyVault({ store: stores[1], kek: rotated, schema: database.schema });
        try {
          assert.equal(await rotatedVault.write('ring', 2, 'ring v3'), true, 'new writes under k2 already');
          assert.deepEqual(await rewrapKeyDocuments(stores[1], rotated, database.schema), {
            rewrapped: ['ca#0', 'ring#0', 'ring#1', 'ring#2'],
            current: ['ring#3'],
            changed: [],
          });
          assert.deepEqual(await rewrapKeyDocuments(stores[1], rotated, database.schema), {
            rewrapped: [],
            current: ['ca#0', 'ring#0', 'ring#1', 'ring#2', 'ring#3'],
            changed: [],
          });
          // A replica that still seals under k1 writes while the rewrap runs: said, so that it is run again.
          let reads = 0;
          const racing: ControlPlaneStore = {
            ...stores[1],
            async keyDocuments() {
              const rows = await stores[1].keyDocuments();
              if (reads++ === 0) assert.equal(await a.write('ca', 0, 'ca v1 under k1'), true);
              return rows;
            },
          };
          assert.deepEqual((await rewrapKeyDocuments(racing, rotated, database.schema)).changed, ['ca#1']);
          assert.deepEqual(await rewrapKeyDocuments(stores[1], rotated, database.schema), {
            rewrapped: ['ca#1'],
            current: ['ca#0', 'ring#0', 'ring#1', 'ring#2', 'ring#3'],
            changed: [],
          });
        } finally {
          await rotatedVault.close();
        }
        // The old line dropped: every stored row opens with the new KEK alone.
        const newKek = parseKek(K2, 'test');
        const rows = await stores[1].keyDocuments();
        assert.equal(rows.length, 6);
        for (const row of rows) {
          assert.equal(row.kekId, 'k2', `${row.name}#${row.generation}`);
          assert.match(await open(row, database.schema, newKek), /^(ring|ca) v\d/);
        }
        const newOnly = await sealedKeyVault({ store: stores[1], kek: newKek, schema: database.schema });
        try {
          assert.equal((await newOnly.read('ca'))?.text, 'ca v1 under k1');
          assert.equal((await newOnly.read('ring'))?.text, 'ring v3');
        } finally {
          await newOnly.close();
        }
      }),
    );

    it(
      'stops telling once closed',
      replicas(async ({ a, b }) => {
        const heard: string[] = [];
        b.watch((name) => heard.push(name));
        await b.close();
        assert.equal(await a.write('ring', -1, 'v0'), true);
        await new Promise((resolve) => setTimeout(resolve, 3 * Math.min(backend.rereadMs, 100)));
        assert.deepEqual(heard, []);
      }),
    );
  });
}

interface Replicas {
  readonly database: Database;
  readonly stores: readonly [ControlPlaneStore, ControlPlaneStore];
  vault(index: 0 | 1, key?: Kek, generationsFile?: GenerationsFile): Promise<KeyVault>;
  readonly a: KeyVault;
  readonly b: KeyVault;
}

describe('sealed key vault options', () => {
  it('refuses a schema the binding cannot carry and a re-read period that is not positive', async () => {
    const store = openSqliteStore(':memory:');
    try {
      await assert.rejects(sealedKeyVault({ store, kek, schema: 'a/b' }), TypeError);
      await assert.rejects(sealedKeyVault({ store, kek, schema: 'main', rereadMs: 0 }), /rereadMs/);
    } finally {
      await store.close();
    }
  });
});
