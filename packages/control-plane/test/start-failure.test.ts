/**
 * A control plane that fails to start leaves nothing open behind it: the process that called
 * `startControlPlane` ends on its own, with no explicit exit. Run in a child process, as a real
 * operator's would be: once after listening (the identity provider refuses its options), once when
 * the port is taken. Before, the first kept the server listening and the process hung.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';

const scratch = mkdtempSync(join(tmpdir(), 'lockstep-start-failure-'));
const INDEX = new URL('../src/index.ts', import.meta.url).href;
after(() => rmSync(scratch, { recursive: true, force: true }));

/** Runs a start that must fail; resolves with what it printed once the process ended by itself. */
function failingStart(
  name: string,
  port: number,
  cookieKeys: string[],
): Promise<{ code: number | null; output: string }> {
  const script = `
    import { openKeyRing, openSqliteStore, openWorkloadCa, startControlPlane } from ${JSON.stringify(INDEX)};
    const keyDir = ${JSON.stringify(join(scratch, name))};
    const ca = await openWorkloadCa({ trustDomain: 'shop.test', keyDir });
    const store = openSqliteStore(':memory:');
    const keys = await openKeyRing(keyDir, 'idp', { retainMs: 60_000 });
    try {
      await startControlPlane({ ca, store, port: ${port}, idp: { keys, cookieKeys: ${JSON.stringify(cookieKeys)}, clients: [], resource: { indicator: 'https://shop.test/api', scopes: [] } } });
      console.log('started');
    } catch (error) {
      console.log('refused: ' + error.message);
      await store.close();
    }`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  child.stderr.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  return new Promise((resolve, reject) => {
    const deadline = setTimeout(() => {
      child.kill('SIGKILL');
      reject(
        new Error(`the process was still alive 30 s after its failed start (something was left open):\n${output}`),
      );
    }, 30_000);
    child.once('exit', (code) => {
      clearTimeout(deadline);
      resolve({ code, output });
    });
  });
}

describe('startControlPlane: a failed start', () => {
  it('after listening: closes the server it opened', async () => {
    const { code, output } = await failingStart('after-listen', 0, ['short']);
    assert.equal(code, 0, output);
    assert.match(output, /^refused: cookieKeys: give at least one secret of 32 characters or more$/m);
  });

  it('on a taken port: closes the feed and everything else it opened', async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = taken.address() as { port: number };
      const { code, output } = await failingStart('taken-port', port, ['a-cookie-secret-of-more-than-32-characters']);
      assert.equal(code, 0, output);
      assert.match(output, /^refused: listen EADDRINUSE/m);
    } finally {
      taken.close();
    }
  });
});
