/**
 * PostgreSQL for tests: found at LOCKSTEP_TEST_PG (default postgres://postgres@127.0.0.1:5432/test).
 * Each test gets schemas of its own (dropped by `cleanup`). Without PostgreSQL, `skip` says why —
 * unless LOCKSTEP_REQUIRE_PG=1 (CI), where an unreachable PostgreSQL is an error.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';

export interface TestPostgres {
  readonly url: string;
  /** Why PostgreSQL cannot be used, or null. */
  readonly problem: string | null;
  /** For `describe(…, { skip })`. */
  readonly skip: string | false;
  /** A new schema name, dropped by `cleanup()`. */
  schema(): string;
  cleanup(): Promise<void>;
}

export async function testPostgres(): Promise<TestPostgres> {
  const url = process.env.LOCKSTEP_TEST_PG ?? 'postgres://postgres@127.0.0.1:5432/test';
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2_000 });
  let problem: string | null = null;
  try {
    await client.connect();
    await client.query('SELECT 1');
  } catch (error) {
    problem = (error as Error).message;
  } finally {
    await client.end().catch(() => {});
  }
  if (problem !== null && process.env.LOCKSTEP_REQUIRE_PG === '1') {
    throw new Error(
      `LOCKSTEP_REQUIRE_PG=1 but PostgreSQL is not reachable at ${url}: ${problem}. Start it (pg_ctlcluster <version> main start) or set LOCKSTEP_TEST_PG.`,
    );
  }
  const schemas: string[] = [];
  return {
    url,
    problem,
    skip:
      problem === null
        ? false
        : `PostgreSQL not reachable at ${url} (${problem}); CI requires it (LOCKSTEP_REQUIRE_PG=1)`,
    schema() {
      const name = `lockstep_test_${randomBytes(6).toString('hex')}`;
      schemas.push(name);
      return name;
    },
    async cleanup() {
      if (problem !== null || schemas.length === 0) return;
      const admin = new pg.Client({ connectionString: url });
      await admin.connect();
      try {
        for (const name of schemas.splice(0)) await admin.query(`DROP SCHEMA IF EXISTS ${name} CASCADE`);
      } finally {
        await admin.end();
      }
    },
  };
}
