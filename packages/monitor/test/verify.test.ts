/**
 * `lockstep audit verify` against an attacker with write access to the database: the append-only
 * triggers dropped first, hashes recomputed where that helps the attacker. Every kind of tampering
 * the issue lists is found and named — before and after the newest checkpoint, on SQLite and
 * PostgreSQL: modify, delete, reorder and truncate; a rollback to an older checkpoint; a deleted
 * source; the oldest checkpoint deleted; each stored column edited; the stream counters zeroed.
 * On SQLite the command itself runs (exit code and output); on PostgreSQL what it runs (verifyTrail).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { DatabaseSync } from 'node:sqlite';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import pg from 'pg';
import { testPostgres } from '@lockstep/testkit';
import {
  auditEntryHash,
  auditEventHash,
  GENESIS,
  openPostgresStore,
  openSqliteStore,
  type AuditBatch,
  type ControlPlaneStore,
  type KeyRing,
} from '@lockstep/control-plane';
import { MIGRATIONS } from '../../control-plane/src/store/migrations.ts';
import { main } from '../../cli/src/main.ts';
import {
  AUDIT_HEAD_FILE,
  createDetector,
  openAuditKeys,
  startCheckpointer,
  verifyTrail,
  witnessAppends,
  type Checkpointer,
  type Problem,
  type VerifyOptions,
} from '../src/index.ts';

const scratch = mkdtempSync(join(tmpdir(), 'lockstep-verify-'));
const postgres = await testPostgres();

after(async () => {
  rmSync(scratch, { recursive: true, force: true });
  await postgres.cleanup();
});

const ORDERS = 'spiffe://shop.test/svc/orders';
const PAYMENTS = 'spiffe://shop.test/svc/payments';
const INVENTORY = 'spiffe://shop.test/svc/inventory';
const MINUTE = 60_000;
const event = (index: number, decision = 'allow') =>
  JSON.stringify({ service: 'orders', requestId: `r-${index}`, decision, txn: `t-${index % 3}` });
const batch = (stream: string, from: number, to: number, extra: Partial<AuditBatch> = {}): AuditBatch => ({
  stream,
  dropped: 0,
  written: to,
  entries: Array.from({ length: to - from + 1 }, (_, index) => ({
    streamSeq: from + index,
    event: event(from + index),
  })),
  ...extra,
});

type Row = Record<string, unknown>;
interface Database {
  run(statement: string, ...values: (string | number | null)[]): Promise<void>;
  all(statement: string, ...values: (string | number | null)[]): Promise<Row[]>;
}

/** Each backend: a fresh store in a fresh home, and the attacker's SQL on it (triggers dropped). */
const BACKENDS: {
  name: string;
  skip: string | false;
  open(home: string): { open(): Promise<ControlPlaneStore>; db: Database };
}[] = [
  {
    name: 'sqlite',
    skip: false,
    open(home) {
      const path = join(home, 'control-plane.db');
      const connect = () => {
        const db = new DatabaseSync(path);
        for (const table of ['audit_events', 'audit_streams', 'audit_chain', 'audit_legacy', 'audit_checkpoints']) {
          for (const change of ['update', 'delete']) db.exec(`DROP TRIGGER IF EXISTS ${table}_no_${change}`);
        }
        return db;
      };
      return {
        open: async () => openSqliteStore(path),
        db: {
          async run(statement, ...values) {
            const db = connect();
            try {
              db.prepare(statement).run(...values);
            } finally {
              db.close();
            }
          },
          async all(statement, ...values) {
            const db = connect();
            try {
              return db.prepare(statement).all(...values) as Row[];
            } finally {
              db.close();
            }
          },
        },
      };
    },
  },
  {
    name: 'postgres',
    skip: postgres.skip,
    open() {
      const schema = postgres.schema();
      const query = async (statement: string, values: (string | number | null)[]) => {
        const client = new pg.Client({ connectionString: postgres.url, options: `-c search_path=${schema}` });
        await client.connect();
        try {
          await client.query(
            'ALTER TABLE audit_events DISABLE TRIGGER ALL; ALTER TABLE audit_chain DISABLE TRIGGER ALL; ALTER TABLE audit_legacy DISABLE TRIGGER ALL',
          );
          let index = 0;
          return (
            await client.query(
              statement.replace(/\?/g, () => `$${++index}`),
              values,
            )
          ).rows as Row[];
        } finally {
          await client.end();
        }
      };
      return {
        open: () => openPostgresStore({ connectionString: postgres.url, schema }),
        db: {
          run: async (statement, ...values) => void (await query(statement, values)),
          all: (statement, ...values) => query(statement, values),
        },
      };
    },
  },
];

/**
 * A trail as the monitor keeps it: orders 1–20 and payments 1–5 signed by link 2 (link 1 is the
 * start), then orders 21–30 appended after it — the tail not yet checkpointed.
 */
async function liveTrail(backend: (typeof BACKENDS)[number]) {
  const home = mkdtempSync(join(scratch, `${backend.name}-`));
  const { open, db } = backend.open(home);
  const keys: KeyRing = await openAuditKeys(join(home, 'keys'));
  let clock = Date.parse('2026-12-01T10:00:00Z');
  const raw = await open();
  const { store, witness } = witnessAppends(raw);
  // The monitor's detector, told of incidents as the assembled control plane tells it.
  const detector = createDetector({ store: raw, now: () => clock, sweepMs: 3_600_000 });
  const start = () =>
    startCheckpointer({
      store,
      keys,
      intervalMs: MINUTE,
      now: () => clock,
      headFile: join(home, 'keys', AUDIT_HEAD_FILE),
      witness,
      onIncident: (incident) => detector.observeTrailIncident(incident),
    });
  let checkpointer: Checkpointer = start();
  await store.appendAudit(ORDERS, batch('o1', 1, 20), clock);
  await store.appendAudit(
    PAYMENTS,
    {
      ...batch('p1', 1, 5),
      entries: batch('p1', 1, 5).entries.map((entry) => ({
        ...entry,
        event: entry.event.replace('orders', 'payments'),
      })),
    },
    clock,
  );
  clock += MINUTE;
  await checkpointer.checkpoint();
  clock += 20_000;
  await store.appendAudit(ORDERS, batch('o1', 21, 30), clock);
  clock += 1_000;
  const trail = {
    home,
    db,
    store,
    keys,
    /** The alerts raised so far (after the detector's sweep). */
    async alerts() {
      await detector.sweep();
      return (await raw.alerts(100)).map((alert) => `${alert.rule}: ${alert.summary}`);
    },
    get clock() {
      return clock;
    },
    advance(ms: number) {
      clock += ms;
    },
    /** A minute passes: the next link. */
    async tick() {
      clock += MINUTE;
      return checkpointer.checkpoint();
    },
    /** A second monitor on the same store (a replica): its own witness and head file. */
    replica() {
      const other = witnessAppends(raw);
      const headFile = join(home, 'replica', AUDIT_HEAD_FILE);
      const begin = () =>
        startCheckpointer({
          store: other.store,
          keys,
          intervalMs: MINUTE,
          now: () => clock,
          headFile,
          witness: other.witness,
        });
      let replica = begin();
      return {
        store: other.store,
        checkpoint: () => replica.checkpoint(),
        /** Dies and starts again (a rolling restart), with its head file. */
        restart() {
          replica = begin();
          return replica.checkpoint();
        },
      };
    },
    /** The monitor stops cleanly (a stop link). */
    stop: () => checkpointer.stop(),
    /** The monitor's head file, as the command reads it. */
    head() {
      const file = join(home, 'keys', AUDIT_HEAD_FILE);
      return { ...(JSON.parse(readFileSync(file, 'utf8')) as { n: number; digest: string }), file };
    },
    /** The monitor dies (no stop link) and starts again three minutes later, with its head file. */
    async restart() {
      clock += 3 * MINUTE;
      checkpointer = start();
      return checkpointer.checkpoint();
    },
    verify: (options: VerifyOptions = {}) => verifyTrail(raw, keys.publicJwks(), { asOf: clock, ...options }),
    /** What `lockstep audit verify` says (SQLite: the command itself), as `KIND source @seq` lines. */
    async command(...extra: string[]): Promise<{ code: number; lines: string[] }> {
      if (backend.name !== 'sqlite') {
        const report = await trail.verify();
        return { code: report.ok ? 0 : 1, lines: report.problems.map(line) };
      }
      const out: string[] = [];
      const previous = process.env.LOCKSTEP_HOME;
      process.env.LOCKSTEP_HOME = home;
      try {
        const code = await main(
          ['audit', 'verify', '--as-of', new Date(clock).toISOString(), ...extra],
          (text) => out.push(text),
          (text) => out.push(text),
        );
        // KIND  source[ @seq]  detail
        return {
          code,
          lines: out.filter((text) => /^[A-Z]+ {2}/.test(text)).map((text) => text.split('  ').slice(0, 2).join(' ')),
        };
      } finally {
        if (previous === undefined) delete process.env.LOCKSTEP_HOME;
        else process.env.LOCKSTEP_HOME = previous;
      }
    },
    /** The attacker recomputes every hash of a source's chain after an edit (the formula is public). */
    async rechain(source: string) {
      let prevHash = GENESIS;
      for (const row of await db.all('SELECT * FROM audit_events WHERE source = ? ORDER BY seq', source)) {
        const hash = auditEventHash({
          source,
          seq: Number(row.seq),
          prevHash,
          stream: String(row.stream),
          streamSeq: Number(row.stream_seq),
          receivedAt: Number(row.received_at),
          event: String(row.event),
        });
        await db.run(
          'UPDATE audit_events SET prev_hash = ?, hash = ? WHERE source = ? AND seq = ?',
          prevHash,
          hash,
          source,
          Number(row.seq),
        );
        prevHash = hash;
      }
    },
    /** Deletes one event and closes the hole (positions after it move down by one). */
    async cut(source: string, seq: number) {
      await db.run('DELETE FROM audit_events WHERE source = ? AND seq = ?', source, seq);
      await db.run('UPDATE audit_events SET seq = -seq WHERE source = ? AND seq > ?', source, seq);
      await db.run('UPDATE audit_events SET seq = -seq - 1 WHERE source = ? AND seq < 0', source);
    },
    async swap(source: string, seq: number) {
      await db.run('UPDATE audit_events SET seq = -1 WHERE source = ? AND seq = ?', source, seq);
      await db.run('UPDATE audit_events SET seq = ? WHERE source = ? AND seq = ?', seq, source, seq + 1);
      await db.run('UPDATE audit_events SET seq = ? WHERE source = ? AND seq = -1', seq + 1, source);
    },
    async close() {
      detector.stop();
      await raw.close();
    },
  };
  return trail;
}

const line = (problem: Problem) =>
  `${problem.kind.toUpperCase()} ${problem.source}${problem.seq === undefined ? '' : ` @${problem.seq}`}`;

/** Verify exits non-zero and names each of `expected` (kind, source and position). */
async function assertFound(trail: Awaited<ReturnType<typeof liveTrail>>, expected: string[]) {
  const { code, lines } = await trail.command();
  assert.equal(code, 1, `verify must fail; it said: ${lines.join(' | ')}`);
  for (const wanted of expected)
    assert.ok(lines.includes(wanted), `expected ${wanted}; verify said: ${lines.join(' | ')}`);
}

for (const backend of BACKENDS) {
  describe(`lockstep audit verify finds tampering (${backend.name})`, { skip: backend.skip }, () => {
    const withTrail = (test: (trail: Awaited<ReturnType<typeof liveTrail>>) => Promise<void>) => async () => {
      const trail = await liveTrail(backend);
      try {
        await test(trail);
      } finally {
        await trail.close();
      }
    };

    it(
      'finds nothing in an intact trail, and says how much is not yet checkpointed',
      withTrail(async (trail) => {
        const report = await trail.verify();
        assert.deepEqual(report.problems, []);
        assert.equal(report.unsigned, 10);
        assert.ok(
          report.notes.includes(
            'not yet checkpointed (10 events): stored and chained, but newer than the newest signed checkpoint',
          ),
          report.notes.join(' | '),
        );
        await trail.tick();
        assert.deepEqual(await trail.command(), { code: 0, lines: [] });
        assert.equal((await trail.verify()).unsigned, 0);
      }),
    );

    it(
      'a live trail: events that arrive while it is verified are no finding',
      withTrail(async (trail) => {
        await trail.tick();
        // Between the walk over the events and the read of the streams' bookkeeping, a sender delivers:
        // an existing stream moves on, and a new source begins. (The real store, reached in between.)
        let delivered = false;
        const auditStreams = async () => {
          if (!delivered) {
            delivered = true;
            await trail.store.appendAudit(ORDERS, batch('o1', 31, 35), trail.clock);
            await trail.store.appendAudit(INVENTORY, batch('i1', 1, 4), trail.clock);
          }
          return trail.store.auditStreams();
        };
        const live = new Proxy(trail.store, {
          get: (target, name) => (name === 'auditStreams' ? auditStreams : (Reflect.get(target, name) as unknown)),
        });
        const report = await verifyTrail(live, trail.keys.publicJwks(), { asOf: trail.clock });
        assert.ok(delivered);
        assert.deepEqual(report.problems, []);
      }),
    );

    describe('before the newest checkpoint (what link 2 signed)', () => {
      it(
        'a modified event',
        withTrail(async (trail) => {
          await trail.db.run(
            "UPDATE audit_events SET event = replace(event, 'allow', 'deny') WHERE source = ? AND seq = 7",
            ORDERS,
          );
          await assertFound(trail, [`MODIFIED ${ORDERS} @7`]);
        }),
      );

      it(
        'a modified event, the chain recomputed',
        withTrail(async (trail) => {
          await trail.db.run(
            "UPDATE audit_events SET event = replace(event, 'allow', 'deny') WHERE source = ? AND seq = 7",
            ORDERS,
          );
          await trail.rechain(ORDERS);
          await assertFound(trail, [`MODIFIED ${ORDERS} @20`]);
        }),
      );

      it(
        'a deleted event, the hole closed and the chain recomputed',
        withTrail(async (trail) => {
          await trail.cut(ORDERS, 7);
          await trail.rechain(ORDERS);
          await assertFound(trail, [`MODIFIED ${ORDERS} @20`]);
        }),
      );

      it(
        'a deleted event',
        withTrail(async (trail) => {
          await trail.db.run('DELETE FROM audit_events WHERE source = ? AND seq = 7', ORDERS);
          await assertFound(trail, [`DELETED ${ORDERS} @7`]);
        }),
      );

      it(
        'two events reordered, the chain recomputed',
        withTrail(async (trail) => {
          await trail.swap(ORDERS, 7);
          await trail.rechain(ORDERS);
          await assertFound(trail, [`MODIFIED ${ORDERS} @20`]);
        }),
      );

      it(
        'the trail truncated',
        withTrail(async (trail) => {
          await trail.db.run('DELETE FROM audit_events WHERE source = ? AND seq > 15', ORDERS);
          await assertFound(trail, [`DELETED ${ORDERS} @16`]);
        }),
      );
    });

    describe('after the newest checkpoint (the tail; the next link finds it)', () => {
      it(
        'a modified event (not recomputed: at once)',
        withTrail(async (trail) => {
          await trail.db.run(
            "UPDATE audit_events SET event = replace(event, 'allow', 'deny') WHERE source = ? AND seq = 25",
            ORDERS,
          );
          await assertFound(trail, [`MODIFIED ${ORDERS} @25`]);
        }),
      );

      const recomputed: [string, (trail: Awaited<ReturnType<typeof liveTrail>>) => Promise<void>][] = [
        [
          'a modified event',
          (trail) =>
            trail.db.run(
              "UPDATE audit_events SET event = replace(event, 'allow', 'deny') WHERE source = ? AND seq = 25",
              ORDERS,
            ),
        ],
        ['a deleted event', (trail) => trail.cut(ORDERS, 25)],
        ['two events reordered', (trail) => trail.swap(ORDERS, 25)],
        [
          'the trail truncated',
          (trail) => trail.db.run('DELETE FROM audit_events WHERE source = ? AND seq > 22', ORDERS),
        ],
      ];
      for (const [what, tamper] of recomputed) {
        it(
          `${what}, the chain recomputed`,
          withTrail(async (trail) => {
            await tamper(trail);
            await trail.rechain(ORDERS);
            const link = await trail.tick();
            assert.equal(link.incidents.length, 1, 'the checkpointer signs an incident, not the rewritten head');
            await assertFound(trail, [`TAMPERED ${ORDERS} @3`]);
            assert.ok(
              (await trail.alerts()).some((alert) =>
                alert.startsWith(`audit-gap: the audit trail was tampered with: `),
              ),
              'and the monitor raises an alert',
            );
          }),
        );
      }

      it(
        'a modified event, the chain recomputed, then an honest batch chained onto it before the next link',
        withTrail(async (trail) => {
          await recomputed[0]?.[1](trail);
          await trail.rechain(ORDERS);
          await trail.store.appendAudit(ORDERS, batch('o1', 31, 32), trail.clock);
          await trail.tick();
          await assertFound(trail, [`TAMPERED ${ORDERS} @3`]);
        }),
      );

      it(
        'tampered again after an incident: the next link signs a second one',
        withTrail(async (trail) => {
          await trail.cut(ORDERS, 25);
          await trail.rechain(ORDERS);
          assert.equal((await trail.tick()).incidents.length, 1);
          await trail.store.appendAudit(ORDERS, batch('o1', 31, 33), trail.clock);
          assert.deepEqual(
            (await trail.tick()).incidents,
            [],
            'the source is judged from the head signed with the incident',
          );
          await trail.store.appendAudit(ORDERS, batch('o1', 34, 36), trail.clock);
          await trail.db.run(
            "UPDATE audit_events SET event = replace(event, 'allow', 'deny') WHERE source = ? AND seq = 33",
            ORDERS,
          );
          await trail.rechain(ORDERS);
          assert.equal((await trail.tick()).incidents.length, 1);
          // And once more with nothing appended in between: the same words, signed again.
          await trail.db.run(
            "UPDATE audit_events SET event = replace(event, 'allow', 'deny') WHERE source = ? AND seq = 34",
            ORDERS,
          );
          await trail.rechain(ORDERS);
          assert.equal((await trail.tick()).incidents.length, 1);
          const { lines } = await trail.command();
          assert.deepEqual(
            lines.filter((entry) => entry.startsWith('TAMPERED')),
            [`TAMPERED ${ORDERS} @3`, `TAMPERED ${ORDERS} @5`, `TAMPERED ${ORDERS} @6`],
          );
        }),
      );

      it(
        "a forged event at the next stream position: the sender's own is refused as taken, and that is an incident",
        withTrail(async (trail) => {
          const forged = event(31, 'deny');
          const [last] = await trail.store.auditEvents(ORDERS, 29, 1);
          const hash = auditEventHash({
            source: ORDERS,
            seq: 31,
            prevHash: last?.hash ?? '',
            stream: 'o1',
            streamSeq: 31,
            receivedAt: trail.clock,
            event: forged,
          });
          await trail.db.run(
            'INSERT INTO audit_events (source, seq, stream, stream_seq, received_at, event, txn, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
            ORDERS,
            31,
            'o1',
            31,
            trail.clock,
            forged,
            't-1',
            last?.hash ?? '',
            hash,
          );
          const delivered = await trail.store.appendAudit(ORDERS, batch('o1', 31, 31), trail.clock);
          assert.deepEqual([delivered.accepted, delivered.duplicates, delivered.conflicts], [0, 0, [31]]);
          // A sender re-sending delivered positions changed makes one incident per stream and link, not one each.
          const changed = batch('o1', 1, 20);
          await trail.store.appendAudit(
            ORDERS,
            {
              ...changed,
              entries: changed.entries.map((entry) => ({ ...entry, event: entry.event.replace('allow', 'deny') })),
            },
            trail.clock,
          );
          const link = await trail.tick();
          assert.deepEqual(
            link.incidents.map((incident) => incident.kind),
            ['forged-event'],
          );
          assert.match(
            link.incidents[0]?.detail ?? '',
            /delivered 21 positions \(1–31\) that the store already held with other events/,
          );
          await assertFound(trail, [`TAMPERED ${ORDERS} @3`]);
        }),
      );
    });

    describe('the checkpoints', () => {
      it(
        'a rollback to an older checkpoint: stale, not the witnessed link, and found when the monitor starts',
        withTrail(async (trail) => {
          await trail.tick();
          const witnessed = await trail.store.newestAuditLink();
          assert.equal(witnessed?.n, 3);
          // The attacker deletes link 3 and what it signed: the store looks like it did at link 2.
          await trail.db.run('DELETE FROM audit_chain WHERE n = 3');
          await trail.db.run('DELETE FROM audit_events WHERE source = ? AND seq > 20', ORDERS);
          await trail.db.run('UPDATE audit_streams SET last_stream_seq = 20, written = 20 WHERE stream = ?', 'o1');
          const later = await trail.verify({ asOf: trail.clock + 5 * MINUTE });
          assert.deepEqual(later.problems.map(line), ['STALE checkpoint chain @2']);
          const against = await trail.verify({ against: witnessed?.jws ?? '' });
          assert.deepEqual(against.problems.map(line), ['DELETED checkpoint chain @3']);
          if (backend.name === 'sqlite') {
            // The command also reads the monitor's head file beside the audit key: it names link 3 too.
            assert.deepEqual(await trail.command(), { code: 1, lines: ['DELETED checkpoint chain @3'] });
            const { code, lines } = await trail.command('--against', witnessed?.jws ?? '');
            assert.deepEqual([code, lines], [1, ['DELETED checkpoint chain @3', 'DELETED checkpoint chain @3']]);
          }
          await trail.restart();
          await assertFound(trail, ['TAMPERED checkpoint chain @3']);
        }),
      );

      it(
        'a rollback to an earlier clean stop: the head file beside the audit key names a later link',
        withTrail(async (trail) => {
          await trail.stop();
          const stopped = await trail.store.newestAuditLink();
          await trail.restart();
          await trail.store.appendAudit(ORDERS, batch('o1', 31, 35), trail.clock);
          await trail.tick();
          await trail.db.run('DELETE FROM audit_chain WHERE n > ?', stopped?.n ?? 0);
          await trail.db.run('DELETE FROM audit_events WHERE source = ? AND seq > 30', ORDERS);
          await trail.db.run('UPDATE audit_streams SET last_stream_seq = 30, written = 30 WHERE stream = ?', 'o1');
          const alone = await trail.verify({ asOf: trail.clock + 24 * 60 * MINUTE });
          assert.deepEqual(alone.problems, [], 'the store alone looks like a system stopped cleanly');
          assert.ok(
            alone.notes.some((note) => note.startsWith('the monitor stopped cleanly at ')),
            alone.notes.join(' | '),
          );
          if (backend.name === 'sqlite')
            assert.deepEqual(await trail.command(), {
              code: 1,
              lines: [`DELETED checkpoint chain @${(stopped?.n ?? 0) + 3}`],
            });
          else
            assert.deepEqual((await trail.verify({ head: trail.head() })).problems.map(line), [
              `DELETED checkpoint chain @${(stopped?.n ?? 0) + 3}`,
            ]);
        }),
      );

      if (backend.name === 'sqlite') {
        it(
          'a head file that cannot be read, or of another trail, is a note: verify still checks everything else',
          withTrail(async (trail) => {
            const file = join(trail.home, 'keys', AUDIT_HEAD_FILE);
            const notes = async () => {
              const out: string[] = [];
              process.env.LOCKSTEP_HOME = trail.home;
              try {
                const code = await main(
                  ['audit', 'verify', '--as-of', new Date(trail.clock).toISOString()],
                  (text) => out.push(text),
                  (text) => out.push(text),
                );
                return { code, notes: out.filter((text) => text.startsWith('note  ')).map((text) => text.slice(6)) };
              } finally {
                delete process.env.LOCKSTEP_HOME;
              }
            };
            writeFileSync(file, '');
            const unreadable = await notes();
            assert.equal(unreadable.code, 0);
            assert.ok(
              unreadable.notes.some((note) => note.startsWith(`the head file ${file} is unreadable (`)),
              unreadable.notes.join(' | '),
            );
            writeFileSync(file, JSON.stringify({ n: 99, digest: 'x', chain: 'another' }));
            const foreign = await notes();
            assert.equal(foreign.code, 0);
            assert.ok(
              foreign.notes.includes(`the head file ${file} is of another trail (its link 1 differs): not compared`),
              foreign.notes.join(' | '),
            );
            rmSync(file);
            assert.ok((await notes()).notes.some((note) => note.startsWith(`no head file at ${file}: `)));
          }),
        );
      }

      it(
        'the oldest checkpoint deleted',
        withTrail(async (trail) => {
          await trail.db.run('DELETE FROM audit_chain WHERE n = 1');
          await assertFound(trail, ['DELETED checkpoint chain @1']);
        }),
      );

      it(
        'everything wiped: every link and every event',
        withTrail(async (trail) => {
          for (const table of ['audit_chain', 'audit_events', 'audit_streams'])
            await trail.db.run(`DELETE FROM ${table}`);
          await assertFound(trail, ['STALE checkpoint chain']);
          await trail.restart();
          await assertFound(trail, ['TAMPERED checkpoint chain @1']);
        }),
      );

      it(
        'a checkpoint changed',
        withTrail(async (trail) => {
          await trail.db.run('UPDATE audit_chain SET at = at + 1 WHERE n = 2');
          await assertFound(trail, ['FORGED checkpoint chain @2']);
        }),
      );

      it(
        'a gap in the cadence that the resumed monitor cannot vouch for',
        withTrail(async (trail) => {
          rmSync(join(trail.home, 'keys', AUDIT_HEAD_FILE));
          await trail.restart();
          await trail.restart();
          await assertFound(trail, ['GAP checkpoint chain @3']);
        }),
      );

      it(
        'a restart it can vouch for is a note, not a problem',
        withTrail(async (trail) => {
          await trail.restart();
          await trail.restart();
          const report = await trail.verify();
          assert.deepEqual(report.problems, []);
          assert.ok(
            report.notes.some((note) => /was down \(it did not stop cleanly\) and resumed from link 2/.test(note)),
            report.notes.join(' | '),
          );
        }),
      );
    });

    it(
      'a whole source deleted',
      withTrail(async (trail) => {
        await trail.db.run('DELETE FROM audit_events WHERE source = ?', PAYMENTS);
        await trail.db.run('DELETE FROM audit_streams WHERE source = ?', PAYMENTS);
        await assertFound(trail, [`DELETED ${PAYMENTS} @1`, `DELETED ${PAYMENTS}`]);
      }),
    );

    describe('each stored column edited', () => {
      const edits: [string, string, string[]][] = [
        ['event', "event = replace(event, 'allow', 'deny')", [`MODIFIED ${ORDERS} @5`]],
        ['txn', "txn = 't-forged'", [`MODIFIED ${ORDERS} @5`]],
        ['received_at', 'received_at = received_at + 1', [`MODIFIED ${ORDERS} @5`]],
        ['stream', "stream = 'o2'", [`MODIFIED ${ORDERS} @5`, `MODIFIED ${ORDERS}`]],
        ['stream_seq', 'stream_seq = 99', [`MODIFIED ${ORDERS} @5`, `MODIFIED ${ORDERS}`]],
        ['prev_hash', 'prev_hash = hash', [`REORDERED ${ORDERS} @5`]],
        ['hash', 'hash = prev_hash', [`MODIFIED ${ORDERS} @5`, `REORDERED ${ORDERS} @6`]],
        ['seq', 'seq = 99', [`DELETED ${ORDERS} @5`]],
      ];
      for (const [column, change, expected] of edits) {
        it(
          column,
          withTrail(async (trail) => {
            await trail.db.run(`UPDATE audit_events SET ${change} WHERE source = ? AND seq = 5`, ORDERS);
            await assertFound(trail, expected);
          }),
        );
      }
    });

    describe('the stream counters zeroed', () => {
      /** inventory: positions 1, 2 and 5 of 6 written, 3 dropped — verify reports them missing. */
      const lossy = async (trail: Awaited<ReturnType<typeof liveTrail>>) => {
        await trail.store.appendAudit(
          INVENTORY,
          {
            stream: 'i1',
            dropped: 3,
            written: 6,
            entries: [1, 2, 5].map((streamSeq) => ({ streamSeq, event: event(streamSeq) })),
          },
          trail.clock,
        );
      };
      const zero = (trail: Awaited<ReturnType<typeof liveTrail>>) =>
        trail.db.run(
          'UPDATE audit_streams SET gaps = 0, dropped = 0, written = 0, last_stream_seq = 0 WHERE stream = ?',
          'i1',
        );

      it(
        'after they were signed: still missing, and changed',
        withTrail(async (trail) => {
          await lossy(trail);
          await trail.tick();
          await zero(trail);
          const report = await trail.verify();
          const inventory = report.problems
            .filter((problem) => problem.source === INVENTORY)
            .map((problem) => `${problem.kind}: ${problem.detail}`);
          assert.deepEqual(inventory, [
            'modified: the bookkeeping of stream i1 says last position 0 and 0 gaps; its events say 5 and 2',
            'modified: the counters of stream i1 were changed after they were signed: last position went down from 5 to 0',
            'missing: stream i1: 2 events never arrived (positions skipped up to 5)',
            'missing: stream i1: the sender dropped 3 events (its log says why: a full journal, a torn line, a failed write, or a batch the collector refused)',
          ]);
          await assertFound(trail, [`MODIFIED ${INVENTORY}`, `MISSING ${INVENTORY}`]);
        }),
      );

      it(
        'before they were signed: the next link signs an incident',
        withTrail(async (trail) => {
          await lossy(trail);
          await zero(trail);
          const link = await trail.tick();
          assert.deepEqual(
            link.incidents.map((incident) => incident.kind),
            ['counter-lowered'],
          );
          await assertFound(trail, [`TAMPERED ${INVENTORY} @3`]);
        }),
      );
    });

    describe('two monitors on one store (replicas)', () => {
      it(
        'the one that loses the race for a link still signs what its own witness found',
        withTrail(async (trail) => {
          const replica = trail.replica();
          await replica.checkpoint();
          await replica.store.appendAudit(PAYMENTS, batch('p1', 6, 9), trail.clock);
          await trail.db.run(
            "UPDATE audit_events SET event = replace(event, 'allow', 'deny') WHERE source = ? AND seq = 7",
            PAYMENTS,
          );
          await trail.rechain(PAYMENTS);
          const links = await Promise.all([trail.tick(), replica.checkpoint()]);
          assert.deepEqual(
            links.flatMap((link) => link.incidents.map((incident) => incident.kind)),
            ['rewritten'],
          );
          await assertFound(trail, [`TAMPERED ${PAYMENTS} @${links.find((link) => link.incidents.length > 0)?.n}`]);
        }),
      );

      it(
        "a rolling restart: the restarted replica vouches for its own last link, older than the chain's newest",
        withTrail(async (trail) => {
          const replica = trail.replica();
          await replica.checkpoint();
          for (let index = 0; index < 4; index += 1) await trail.tick();
          trail.advance(3 * MINUTE);
          await replica.restart();
          const report = await trail.verify();
          assert.deepEqual(report.problems, []);
        }),
      );
    });

    it(
      'a pause in the cadence between two links of one monitor (the store stalled) is a note',
      withTrail(async (trail) => {
        trail.advance(10 * MINUTE);
        await trail.tick();
        const report = await trail.verify();
        assert.deepEqual(report.problems, []);
        assert.ok(
          report.notes.some((note) => /^checkpoints paused from .* nothing is missing between them/.test(note)),
          report.notes.join(' | '),
        );
      }),
    );

    describe('streams that ended', () => {
      it(
        'cleanly: nothing to report; uncleanly: what was numbered but never delivered',
        withTrail(async (trail) => {
          await trail.store.appendAudit(ORDERS, batch('o2', 1, 4, { final: true }), trail.clock);
          // The sender numbered 1–10 and died after delivering 1–7: it never came back.
          await trail.store.appendAudit(ORDERS, { ...batch('o3', 1, 7), written: 10 }, trail.clock);
          assert.deepEqual((await trail.verify()).problems, [], 'not yet: it may still be on its way');
          for (let minute = 0; minute < 6; minute += 1) {
            // o1 and p1 are alive: their senders say so (keep-alives); o3's is gone.
            await trail.store.appendAudit(ORDERS, { stream: 'o1', dropped: 0, written: 30, entries: [] }, trail.clock);
            await trail.store.appendAudit(PAYMENTS, { stream: 'p1', dropped: 0, written: 5, entries: [] }, trail.clock);
            await trail.tick();
          }
          const report = await trail.verify();
          assert.deepEqual(
            report.problems.map(
              (problem) => `${problem.kind}: ${problem.detail.replace(/silent since \S+/, 'silent since …')}`,
            ),
            [
              'unclean: stream o3 ended uncleanly, 3 events unaccounted: silent since … without closing (its sender died and did not resume it)',
            ],
          );
          assert.ok(
            (await trail.alerts()).some((alert) =>
              /^audit-gap: orders: stream o3 ended uncleanly, 3 events unaccounted \(silent since /.test(alert),
            ),
            'the monitor raises an alert too',
          );
        }),
      );

      it(
        'a dead stream made to look alive after the monitor restarted (a new witness) is still unaccounted',
        withTrail(async (trail) => {
          await trail.store.appendAudit(ORDERS, { ...batch('o3', 1, 7), written: 10 }, trail.clock);
          await trail.tick();
          await trail.restart();
          await trail.db.run('UPDATE audit_streams SET last_seen = ? WHERE stream = ?', 4102444800000, 'o3');
          for (let minute = 0; minute < 6; minute += 1) {
            await trail.store.appendAudit(ORDERS, { stream: 'o1', dropped: 0, written: 30, entries: [] }, trail.clock);
            await trail.store.appendAudit(PAYMENTS, { stream: 'p1', dropped: 0, written: 5, entries: [] }, trail.clock);
            await trail.tick();
          }
          assert.deepEqual(
            (await trail.verify()).problems.map((problem) => problem.kind),
            ['unclean'],
          );
        }),
      );

      it(
        'a dead stream made to look alive (its last sight moved on in the store) is still unaccounted',
        withTrail(async (trail) => {
          await trail.store.appendAudit(ORDERS, { ...batch('o3', 1, 7), written: 10 }, trail.clock);
          await trail.tick();
          for (let minute = 0; minute < 6; minute += 1) {
            await trail.store.appendAudit(ORDERS, { stream: 'o1', dropped: 0, written: 30, entries: [] }, trail.clock);
            await trail.store.appendAudit(PAYMENTS, { stream: 'p1', dropped: 0, written: 5, entries: [] }, trail.clock);
            await trail.db.run('UPDATE audit_streams SET last_seen = ? WHERE stream = ?', trail.clock, 'o3');
            await trail.tick();
          }
          await trail.db.run('UPDATE audit_streams SET last_seen = ? WHERE stream = ?', 4102444800000, 'o3');
          assert.deepEqual(
            (await trail.verify()).problems.map((problem) =>
              problem.detail.replace(/silent since \S+/, 'silent since …'),
            ),
            [
              'stream o3 ended uncleanly, 3 events unaccounted: silent since … without closing (its sender died and did not resume it)',
            ],
          );
        }),
      );

      it(
        'closed with events it wrote never delivered',
        withTrail(async (trail) => {
          await trail.store.appendAudit(ORDERS, { ...batch('o2', 1, 4), written: 6, final: true }, trail.clock);
          assert.deepEqual(
            (await trail.verify()).problems.map((problem) => problem.detail),
            [`stream o2: closed at ${new Date(trail.clock).toISOString()} having written 6; events 5–6 never arrived`],
          );
        }),
      );
    });
  });
}

describe('a trail from before the checkpoint chain (v1 hashes)', () => {
  it('verifies after the upgrade, and an edit of a v1 event is still found', async () => {
    const home = mkdtempSync(join(scratch, 'legacy-'));
    const path = join(home, 'control-plane.db');
    // The schema as the previous release left it, with two v1 events of orders.
    const db = new DatabaseSync(path);
    db.exec('CREATE TABLE lockstep_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)');
    for (const migration of MIGRATIONS.filter((step) => step.version <= 7)) {
      db.exec(migration.sqlite);
      db.prepare('INSERT INTO lockstep_migrations (version, applied_at) VALUES (?, 0)').run(migration.version);
    }
    let prev = GENESIS;
    for (const seq of [1, 2]) {
      const hash = auditEntryHash(ORDERS, seq, prev, event(seq));
      db.prepare(
        'INSERT INTO audit_events (source, seq, stream, stream_seq, received_at, event, txn, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
      ).run(ORDERS, seq, 'old', seq, 1, event(seq), `t-${seq % 3}`, prev, hash);
      prev = hash;
    }
    db.prepare(
      'INSERT INTO audit_streams (source, stream, last_stream_seq, dropped, gaps, first_seen, last_seen) VALUES (?, ?, 2, 0, 0, 1, 1)',
    ).run(ORDERS, 'old');
    db.close();

    const store = openSqliteStore(path);
    try {
      const keys = await openAuditKeys(join(home, 'keys'));
      const checkpointer = startCheckpointer({ store, keys, intervalMs: MINUTE });
      await store.appendAudit(ORDERS, batch('new', 1, 2), Date.now());
      await checkpointer.checkpoint();
      assert.deepEqual(await store.auditLegacy(), [{ source: ORDERS, through: 2 }]);
      const report = await verifyTrail(store, keys.publicJwks());
      assert.deepEqual(report.problems, []);
      assert.deepEqual(
        report.sources.map((source) => [source.events, source.checkpointed]),
        [[4, 4]],
      );
      const raw = new DatabaseSync(path);
      raw.exec('DROP TRIGGER audit_events_no_update');
      raw.exec("UPDATE audit_events SET event = replace(event, 'allow', 'deny') WHERE seq = 1");
      raw.close();
      assert.deepEqual((await verifyTrail(store, keys.publicJwks())).problems.map(line), [`MODIFIED ${ORDERS} @1`]);
      await checkpointer.stop();
    } finally {
      await store.close();
    }
  });
});
