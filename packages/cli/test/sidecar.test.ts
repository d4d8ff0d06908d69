/**
 * `lockstep sidecar --config <file>` as an operator runs it: joined with LOCKSTEP_JOIN_TOKEN, it says
 * where it listens, and stops cleanly on SIGTERM; a bad config or a missing token is refused with the fix.
 * (What the sidecar does is @lockstep/proxy's test.)
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { createJoinToken } from '@lockstep/control-plane';
import { assembleControlPlane, type AssembledControlPlane } from '@lockstep/monitor';
import { main } from '../src/main.ts';

const BIN = fileURLToPath(new URL('../bin/lockstep.js', import.meta.url));
const scratch = mkdtempSync(join(tmpdir(), 'lockstep-sidecar-cli-'));
let controlPlane: AssembledControlPlane;

before(async () => {
  controlPlane = await assembleControlPlane({
    trustDomain: 'shop.test',
    keyDir: join(scratch, 'keys'),
    store: { sqlite: join(scratch, 'store.db') },
    checkpointIntervalMs: 3_600_000,
    detection: { sweepMs: 3_600_000 },
    output: { warning: () => {} },
  });
});

after(async () => {
  await controlPlane.close();
  rmSync(scratch, { recursive: true, force: true });
});

function writeConfig(extra = ''): string {
  const file = join(scratch, 'sidecar.yaml');
  writeFileSync(
    file,
    `service: orders\ncontrolPlane: ${controlPlane.url}\ntrustDomain: shop.test\nlisten: { port: 0 }\n` +
      `upstream: http://127.0.0.1:9\negress: { port: 0 }\nstateDir: ${join(scratch, 'orders')}\n` +
      `routes:\n  GET /orders/:id: { action: orders:read }\n${extra}`,
  );
  return file;
}

describe('lockstep sidecar', () => {
  it('joins, says where it listens, and stops on SIGTERM', async () => {
    const token = (await createJoinToken(controlPlane.store, controlPlane.ca, { service: 'orders', createdBy: 'cli' }))
      .token;
    const child = spawn(process.execPath, [BIN, 'sidecar', '--config', writeConfig()], {
      env: { ...process.env, LOCKSTEP_JOIN_TOKEN: token },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    for (let i = 0; i < 300 && !output.includes('egress on'); i++) await new Promise((r) => setTimeout(r, 50));
    assert.match(output, /sidecar orders listening on https:\/\/127\.0\.0\.1:\d+ \(upstream http:\/\/127\.0\.0\.1:9\)/);
    assert.match(output, /sidecar orders egress on http:\/\/127\.0\.0\.1:\d+/);
    child.kill('SIGTERM');
    assert.equal(await exited, 0, output);
    assert.match(output, /sidecar orders: stopping/);
  });

  it('refuses a bad config naming the field, and a missing join token', async () => {
    const err: string[] = [];
    const previous = process.env.LOCKSTEP_JOIN_TOKEN;
    try {
      delete process.env.LOCKSTEP_JOIN_TOKEN;
      assert.equal(
        await main(
          ['sidecar', '--config', writeConfig()],
          () => {},
          (line) => err.push(line),
        ),
        2,
      );
      assert.match(err.join('\n'), /LOCKSTEP_JOIN_TOKEN is not set/);
      process.env.LOCKSTEP_JOIN_TOKEN = 'ljt1.x.y';
      const code = await main(
        ['sidecar', '--config', writeConfig('limits: { bodyByte: 1 }\n')],
        () => {},
        (line) => err.push(line),
      );
      assert.equal(code, 1);
      assert.match(err.at(-1) ?? '', /sidecar\.yaml: limits\.bodyByte: unknown field; the fields are bodyBytes/);
    } finally {
      if (previous === undefined) delete process.env.LOCKSTEP_JOIN_TOKEN;
      else process.env.LOCKSTEP_JOIN_TOKEN = previous;
    }
  });
});
