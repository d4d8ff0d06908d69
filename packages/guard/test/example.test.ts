import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

test('the guard example demonstrates what it claims', async () => {
  const devDir = mkdtempSync(join(tmpdir(), 'lockstep-example-'));
  const example = new URL('../example/server.ts', import.meta.url).pathname;
  const { stdout, stderr } = await promisify(execFile)(process.execPath, [example, '--once'], {
    env: { ...process.env, LOCKSTEP_DEV_DIR: devDir },
    timeout: 60_000,
  });
  assert.match(stderr, /DEV KEYS/);
  assert.match(stdout, /gateway reads an order for a customer\s+200\s+LOCKSTEP_ALLOW/);
  assert.match(stdout, /gateway deletes an order for a customer\s+403\s+LOCKSTEP_ERR_DENIED/);
  assert.match(stdout, /reports \(compromised\) reads an order\s+403\s+LOCKSTEP_ERR_DENIED/);
  assert.match(stdout, /caller without a client certificate\s+401\s+LOCKSTEP_ERR_PEER_CERT_MISSING/);
  const audit = readFileSync(join(devDir, 'audit.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as { reason: string });
  assert.ok(audit.some((event) => event.reason === 'LOCKSTEP_ERR_DENIED'));
  assert.ok(audit.some((event) => event.reason === 'LOCKSTEP_ALLOW'));
});
