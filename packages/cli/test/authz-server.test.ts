/**
 * `lockstep authz-server --config <file>` as an operator runs it: joined with LOCKSTEP_JOIN_TOKEN, it says
 * where it listens (HTTPS and gRPC) and whom it trusts, and stops cleanly on SIGTERM; a bad config or a
 * missing token is refused with the fix. (What the decision service decides is @lockstep/proxy's test.)
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
const scratch = mkdtempSync(join(tmpdir(), 'lockstep-authz-cli-'));
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
  const file = join(scratch, 'authz.yaml');
  writeFileSync(
    file,
    `service: orders\ncontrolPlane: ${controlPlane.url}\ntrustDomain: shop.test\nlisten: { port: 0 }\n` +
      `grpc: { port: 0 }\ntrustedProxies: [spiffe://shop.test/svc/edge]\nstateDir: ${join(scratch, 'orders')}\n` +
      `routes:\n  GET /orders/:id: { action: orders:read }\n${extra}`,
  );
  return file;
}

describe('lockstep authz-server', () => {
  it('joins, says where it listens and whom it trusts, and stops on SIGTERM', async () => {
    const token = (await createJoinToken(controlPlane.store, controlPlane.ca, { service: 'orders', createdBy: 'cli' }))
      .token;
    const child = spawn(process.execPath, [BIN, 'authz-server', '--config', writeConfig()], {
      env: { ...process.env, LOCKSTEP_JOIN_TOKEN: token },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    for (let i = 0; i < 300 && !output.includes('trusts the proxies'); i++) await new Promise((r) => setTimeout(r, 50));
    assert.match(output, /authz-server orders listening on https:\/\/127\.0\.0\.1:\d+ /);
    assert.match(
      output,
      /authz-server orders gRPC ext_authz on 127\.0\.0\.1:\d+ \(envoy\.service\.auth\.v3\.Authorization\)/,
    );
    assert.match(output, /authz-server orders trusts the proxies spiffe:\/\/shop\.test\/svc\/edge/);
    child.kill('SIGTERM');
    assert.equal(await exited, 0, output);
    assert.match(output, /authz-server orders: stopping/);
  });

  it('refuses a bad config naming the field, and a missing join token', async () => {
    const err: string[] = [];
    const previous = process.env.LOCKSTEP_JOIN_TOKEN;
    try {
      delete process.env.LOCKSTEP_JOIN_TOKEN;
      assert.equal(
        await main(
          ['authz-server', '--config', writeConfig()],
          () => {},
          (line) => err.push(line),
        ),
        2,
      );
      assert.match(err.join('\n'), /LOCKSTEP_JOIN_TOKEN is not set/);
      process.env.LOCKSTEP_JOIN_TOKEN = 'ljt1.x.y';
      const code = await main(
        ['authz-server', '--config', writeConfig('authzenCallers: [spiffe://shop.test/svc/bff]\n')],
        () => {},
        (line) => err.push(line),
      );
      assert.equal(code, 1);
      assert.match(
        err.at(-1) ?? '',
        /authz\.yaml: authzenCallers: spiffe:\/\/shop\.test\/svc\/bff is not in trustedProxies: add it there too/,
      );
      const help: string[] = [];
      assert.equal(await main(['authz-server', '--help'], (line) => help.push(line)), 0);
      assert.match(help.join('\n'), /lockstep authz-server --config <authz\.yaml>/);
    } finally {
      if (previous === undefined) delete process.env.LOCKSTEP_JOIN_TOKEN;
      else process.env.LOCKSTEP_JOIN_TOKEN = previous;
    }
  });
});
