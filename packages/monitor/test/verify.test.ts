/**
 * `lockstep audit verify` against an attacker with write access to the database (the append-only
 * triggers dropped first): every kind of tampering is found and named — on SQLite and PostgreSQL.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { DatabaseSync } from 'node:sqlite';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { testPostgres } from '@lockstep/testkit';
import { openKeyRing, openPostgresStore, openSqliteStore, type ControlPlaneStore, type KeyRing } from '@lockstep/control-plane';
import { startCheckpointer, verifyTrail } from '../src/index.ts';

const scratch = mkdtempSync(join(tmpdir(), 'lockstep-verify-'));
const postgres = await testPostgres();
const PG_SCHEMA = postgres.schema();

after(async () => {
  rmSync(scratch, { recursive: true, force: true });
  await postgres.cleanup();
});

/** Each backend: how to open it, and how the attacker runs SQL on it (positional `?` parameters). */
const BACKENDS: { name: string; skip: string | false; open(): Promise<ControlPlaneStore>; sql(statement: string, ...values: (string | number)[]): Promise<void> }[] = [
  {
    name: 'sqlite', skip: false,
    open: async () => openSqliteStore(join(scratch, 'cp.db')),
    async sql(statement, ...values) {
      const db = new DatabaseSync(join(scratch, 'cp.db'));
      try {
        for (const trigger of ['audit_events_no_update', 'audit_events_no_delete', 'audit_checkpoints_no_update', 'audit_checkpoints_no_delete']) db.exec(`DROP TRIGGER IF EXISTS ${trigger}`);
        db.prepare(statement).run(...values);
      } finally {
        db.close();
      }
    },
  },
  {
    name: 'postgres', skip: postgres.skip,
    open: () => openPostgresStore({ connectionString: postgres.url, schema: PG_SCHEMA }),
    async sql(statement, ...values) {
      const client = new pg.Client({ connectionString: postgres.url, options: `-c search_path=${PG_SCHEMA}` });
      await client.connect();
      try {
        await client.query('ALTER TABLE audit_events DISABLE TRIGGER ALL; ALTER TABLE audit_checkpoints DISABLE TRIGGER ALL');
        let index = 0;
        await client.query(statement.replace(/\?/g, () => `$${++index}`), values);
      } finally {
        await client.end();
      }
    },
  },
];

const SOURCE = 'spiffe://shop.test/svc/orders';
const event = (index: number, decision = 'allow') => JSON.stringify({ service: 'orders', requestId: `r-${index}`, decision, txn: `t-${index % 3}` });

for (const backend of BACKENDS) {
  describe(`lockstep audit verify finds tampering (${backend.name})`, { skip: backend.skip }, () => {
    let store: ControlPlaneStore;
    let keys: KeyRing;
    const problems = async () => (await verifyTrail(store, keys.publicJwks())).problems.map((problem) => `${problem.kind} ${problem.seq ?? ''}`.trim());

    before(async () => {
      store = await backend.open();
      keys = await openKeyRing(join(scratch, `keys-${backend.name}`), 'audit', { retainMs: 3_600_000 });
      await store.appendAudit(SOURCE, { stream: 's', dropped: 0, entries: Array.from({ length: 32 }, (_, index) => ({ stream: 's', streamSeq: index + 1, txn: null, event: event(index + 1, index === 30 ? 'deny' : 'allow') })) }, Date.now());
      await startCheckpointer({ store, keys, intervalMs: 3_600_000 }).checkpoint();
    });
    after(async () => {
      await store.close();
    });

    it('finds nothing in an intact trail', async () => {
      assert.deepEqual(await problems(), []);
    });

    it('a modified event', async () => {
      await backend.sql("UPDATE audit_events SET event = replace(event, '\"deny\"', '\"allow\"') WHERE source = ? AND seq = 31", SOURCE);
      assert.deepEqual(await problems(), ['modified 31']);
    });

    it('a deleted event', async () => {
      await backend.sql('DELETE FROM audit_events WHERE source = ? AND seq = 10', SOURCE);
      assert.deepEqual(await problems(), ['deleted 10', 'modified 31']);
    });

    it('reordered events', async () => {
      await backend.sql('UPDATE audit_events SET seq = -5 WHERE source = ? AND seq = 5', SOURCE);
      await backend.sql('UPDATE audit_events SET seq = 5 WHERE source = ? AND seq = 6', SOURCE);
      await backend.sql('UPDATE audit_events SET seq = 6 WHERE source = ? AND seq = -5', SOURCE);
      const found = await problems();
      assert.ok(found.includes('reordered 5') || found.includes('modified 5'), found.join(', '));
      assert.ok(found.includes('modified 6'), found.join(', '));
    });

    it('the newest events deleted after a checkpoint saw them, and a forged checkpoint', async () => {
      await backend.sql('DELETE FROM audit_events WHERE source = ? AND seq > 30', SOURCE);
      assert.ok((await problems()).includes('deleted 32'), 'the checkpoint saw 32 events');
      await backend.sql("UPDATE audit_checkpoints SET seq = 30, hash = 'f00' WHERE source = ?", SOURCE);
      assert.ok((await problems()).includes('forged 30'));
    });

    it('events a sender numbered but never delivered, and events it dropped', async () => {
      const payments = 'spiffe://shop.test/svc/payments';
      const report = await store.appendAudit(payments, { stream: 'p', dropped: 3, entries: [1, 2, 5].map((streamSeq) => ({ stream: 'p', streamSeq, txn: null, event: event(streamSeq) })) }, Date.now());
      assert.deepEqual(report.gaps, [[3, 4]]);
      const found = (await verifyTrail(store, keys.publicJwks())).problems.filter((problem) => problem.source === payments);
      assert.deepEqual(found.map((problem) => problem.detail), ['stream p: 2 events never arrived (positions skipped up to 5)', 'stream p: the sender dropped 3 events (its spool was full)']);
    });
  });
}
