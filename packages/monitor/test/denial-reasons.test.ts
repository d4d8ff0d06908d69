/**
 * Which refusals count toward a caller's denial burst: those the caller caused. An edge's record of
 * a service behind it failing (`DOWNSTREAM_5xx`) is not the user's doing — a service outage must not
 * make every user of the shop look like an attacker — while a downstream refusal (`DOWNSTREAM_403`)
 * still is. The events go through the real collector's store (SQLite) into the real detector.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { openSqliteStore, type ControlPlaneStore } from '@lockstep/control-plane';
import { createDetector } from '../src/detector.ts';

const GATEWAY = 'spiffe://shop.test/svc/gateway';
const scratch = mkdtempSync(join(tmpdir(), 'lockstep-denial-reasons-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

async function burst(store: ControlPlaneStore, stream: string, sub: string, reason: string): Promise<string[]> {
  const detector = createDetector({ store, sweepMs: 3_600_000 });
  const raised: string[] = [];
  detector.onAlert((alert) => raised.push(`${alert.rule} ${alert.subject}`));
  const events = Array.from({ length: 25 }, (_, index) => ({
    time: new Date().toISOString(),
    service: 'gateway',
    requestId: `${stream}-${index}`,
    caller: null,
    sub,
    txn: null,
    method: 'GET',
    route: '/api/orders',
    action: 'gateway:GET /api/orders',
    resource: 'gateway',
    decision: 'deny',
    reason,
  }));
  const result = await store.appendAudit(
    GATEWAY,
    {
      stream,
      dropped: 0,
      written: 25,
      entries: events.map((event, index) => ({ streamSeq: index + 1, event: JSON.stringify(event) })),
    },
    Date.now(),
  );
  detector.observeDecisions({ source: GATEWAY, service: 'gateway', result, events });
  await new Promise((resolve) => setTimeout(resolve, 50));
  detector.stop();
  return raised.filter((alert) => alert.startsWith('denial-burst'));
}

describe('denial bursts at an edge', () => {
  it('a service behind the edge failing (DOWNSTREAM_503) is no burst against its users; a refusal (DOWNSTREAM_403) is', async () => {
    const store = await openSqliteStore(join(scratch, 'store.db'));
    try {
      assert.deepEqual(await burst(store, 'g1', 'alice', 'DOWNSTREAM_503'), []);
      assert.deepEqual(await burst(store, 'g2', 'mallory', 'DOWNSTREAM_403'), ['denial-burst user mallory at gateway']);
    } finally {
      await store.close();
    }
  });
});
