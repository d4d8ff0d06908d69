/**
 * `lockstep events` as an operator runs it: the control plane in a child process (as in cli.test.ts),
 * a real guard that joined it with a join token and ships its decisions to the monitor, and the
 * command reading them back over the admin API — lines, filters, JSON, probes apart, usage errors.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import type { Server } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { Agent, request } from 'undici';
import { createGuard, type Guard } from '@lockstep/guard';
import { lockstepHttp } from '@lockstep/guard/http';
import { joinAsWorkload, joinControlPlane, type WorkloadAgent, type WorkloadCredentials } from '@lockstep/workload';
import { main } from '../src/main.ts';

const BIN = fileURLToPath(new URL('../bin/lockstep.js', import.meta.url));
const home = mkdtempSync(join(tmpdir(), 'lockstep-events-'));
const state = join(home, 'state');
let child: ChildProcess;
let output = '';
let agent: WorkloadAgent;
let guard: Guard;
let server: Server;
let origin: string;
let caller: WorkloadCredentials;

async function run(...argv: string[]): Promise<{ code: number; out: string[]; err: string[] }> {
  const out: string[] = [];
  const err: string[] = [];
  const previous = process.env.LOCKSTEP_HOME;
  process.env.LOCKSTEP_HOME = state;
  try {
    const code = await main(
      argv,
      (line) => out.push(line),
      (line) => err.push(line),
    );
    return { code, out, err };
  } finally {
    if (previous === undefined) delete process.env.LOCKSTEP_HOME;
    else process.env.LOCKSTEP_HOME = previous;
  }
}

/** `lockstep events … --json`, parsed. */
async function listed(...argv: string[]): Promise<Record<string, unknown>[]> {
  const answer = await run('events', ...argv, '--json');
  assert.equal(answer.code, 0, answer.err.join('\n'));
  return JSON.parse(answer.out.join('\n')) as Record<string, unknown>[];
}

/** Until `count` events are listed: a guard ships its decisions about every second. */
async function shipped(count: number, ...argv: string[]): Promise<Record<string, unknown>[]> {
  for (let tries = 0; ; tries += 1) {
    const events = await listed(...argv);
    if (events.length >= count || tries === 100) return events;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function startControlPlane(): Promise<string> {
  cpSync(new URL('../../guard/example/policies/', import.meta.url), join(home, 'policies'), { recursive: true });
  mkdirSync(state, { recursive: true, mode: 0o700 });
  const argv = ['control-plane', '--trust-domain', 'shop.test', '--port', '0', '--policy-dir', join(home, 'policies')];
  child = spawn(process.execPath, [BIN, ...argv], {
    env: { ...process.env, LOCKSTEP_HOME: state },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`control plane did not start:\n${output}`)), 30_000);
    const collect = (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes('listening on')) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout?.on('data', collect);
    child.stderr?.on('data', collect);
    child.once('exit', (code) => reject(new Error(`control plane exited (${code}):\n${output}`)));
  });
  return /listening on (\S+)/.exec(output)?.[1] ?? '';
}

async function joinToken(service: string): Promise<string> {
  const created = await run('join-token', 'create', service);
  assert.equal(created.code, 0, created.err.join('\n'));
  return created.out[0] ?? '';
}

before(async () => {
  const url = await startControlPlane();
  // The service `hello`, as a user secures one: joined with a join token, its guard attached to the agent.
  agent = await joinAsWorkload({
    url,
    trustDomain: 'shop.test',
    joinToken: await joinToken('hello'),
    service: 'hello',
    stateDir: join(home, 'hello'),
  });
  const logger = { info() {}, warn() {}, error: (message: string) => console.error(message) };
  guard = await createGuard({ ...agent.guardOptions(), logger });
  agent.attach(guard);
  server = guard.createServer(
    lockstepHttp(
      guard,
      { 'GET /hello': { public: true }, 'DELETE /hello': { action: 'hello:delete' } },
      (_request, response) => {
        response.writeHead(200, { 'content-type': 'application/json' }).end('{"hello":"world"}');
      },
    ),
  );
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  origin = `https://127.0.0.1:${(server.address() as { port: number }).port}`;
  caller = await joinControlPlane({
    url,
    trustDomain: 'shop.test',
    joinToken: await joinToken('caller'),
    service: 'caller',
  });
});

after(async () => {
  server.close();
  await agent.close();
  await guard.close();
  if (child.exitCode === null) {
    child.kill('SIGTERM');
    await new Promise((resolve) => child.once('exit', resolve));
  }
  rmSync(home, { recursive: true, force: true });
});

/** A call to `hello` with the caller's SVID and no Txn-Token. */
async function call(method: 'GET' | 'DELETE'): Promise<number> {
  const tls = { cert: caller.chainPem, key: caller.keyPem, ca: caller.bundlePem };
  const dispatcher = new Agent({ connect: { ...tls, checkServerIdentity: () => undefined } });
  try {
    const response = await request(`${origin}/hello`, { method, dispatcher });
    await response.body.dump();
    return response.statusCode;
  } finally {
    await dispatcher.close();
  }
}

describe('lockstep events', () => {
  it('lists the decisions the guard shipped, newest first, one aligned line each', async () => {
    const none = await run('events');
    assert.deepEqual(
      [none.code, none.out],
      [
        0,
        [
          'no events yet: no guard has shipped a decision to the monitor; ' +
            "a scanner's probes are listed apart: add --probes",
        ],
      ],
    );
    assert.equal(await call('GET'), 200, 'a public route: allowed');
    assert.equal(await call('DELETE'), 401, 'no Txn-Token: denied');
    assert.equal((await shipped(2, '--service', 'hello')).length, 2);
    const lines = await run('events', '--service', 'hello');
    assert.equal(lines.code, 0, lines.err.join('\n'));
    const [deny, allow] = lines.out;
    const CALLER = 'caller=spiffe://shop\\.test/svc/caller';
    const denied =
      `^\\S+Z {2}hello {2}deny {3}LOCKSTEP_ERR_\\w+ {2}hello:delete {2}${CALLER} {2}` + 'sub=- {2}request=\\S+$';
    assert.match(deny ?? '', new RegExp(denied));
    // A public route: the guard decides before it asks who calls.
    assert.match(allow ?? '', /^\S+Z {2}hello {2}allow {2}- +GET \/hello +caller=- +sub=- {2}request=\S+$/);
    assert.equal(lines.out.length, 2);
    assert.equal(deny?.indexOf('sub='), allow?.indexOf('sub='), 'columns aligned');
  });

  it('filters exactly and prints the events as stored with --json', async () => {
    const [deny] = await listed('--service', 'hello', '--decision', 'deny');
    const seen = [deny?.service, deny?.decision, deny?.method, deny?.caller];
    assert.deepEqual(seen, ['hello', 'deny', 'DELETE', caller.spiffeId]);
    assert.equal((await listed('--reason', String(deny?.reason))).length, 1);
    const [allow, ...more] = await listed('--service', 'hello', '--decision', 'allow');
    assert.deepEqual([allow?.reason, allow?.action, more], ['LOCKSTEP_ALLOW_PUBLIC', 'GET /hello', []]);
    const newest = await listed('--service', 'hello', '--limit', '1');
    assert.deepEqual(
      newest.map((event) => event.requestId),
      [deny?.requestId],
    );
    const none = await run('events', '--service', 'hello', '--sub', 'nobody');
    assert.equal(none.code, 0);
    assert.deepEqual(none.out, [
      'no events match --service hello --sub nobody: drop or change a filter to widen the ' +
        "search; a scanner's probes are listed apart: add --probes",
    ]);
    assert.deepEqual(await listed('--service', 'hello', '--sub', 'nobody'), []);
    // Each read is an admin call, in the audit trail like the admin API's other reads; listed when asked for.
    const reads = await listed('--service', 'control-plane', '--decision', 'allow');
    const admin = 'spiffe://shop.test/admin/admin';
    assert.ok(reads.some((event) => event.action === 'admin:events.read' && event.caller === admin));
  });

  it("leaves a scanner's probes out, unless --probes", async () => {
    const scanned = await run('scan', '--only', 'authz.unlisted-caller', '--no-monitor');
    assert.notEqual(scanned.code, 2, scanned.err.join('\n'));
    const probes = await shipped(1, '--service', 'hello', '--probes');
    assert.ok(probes.length > 0 && probes.every((event) => typeof event.probe === 'string'), 'only probes');
    const real = await listed('--service', 'hello', '--limit', '500');
    assert.equal(real.length, 2, 'the two real decisions only');
    assert.ok(real.every((event) => event.probe === undefined));
    // Without --service, too: the control plane's own admin actions (these reads) are left out.
    assert.deepEqual(
      (await listed()).map((event) => event.requestId),
      real.map((event) => event.requestId),
    );
  });

  it('answers a wrong option with a usage error that names what to write (exit 2)', async () => {
    const decision = await run('events', '--decision', 'maybe');
    assert.equal(decision.code, 2);
    assert.match(decision.err.join('\n'), /--decision must be one of allow, deny, dry-run; got "maybe"/);
    const limit = await run('events', '--limit', '501');
    assert.equal(limit.code, 2);
    assert.match(limit.err.join('\n'), /--limit must be a whole number from 1 to 500/);
    assert.equal((await run('events', 'hello')).code, 2, 'no positional argument');
    assert.equal((await run('events', '--colour', 'blue')).code, 2);
    const help = await run('events', '--help');
    assert.equal(help.code, 0);
    assert.match(help.out.join('\n'), /lockstep events \[--service <name>\] \[--decision allow\|deny\|dry-run\]/);
    assert.match((await run('--help')).out.join('\n'), /lockstep events/);
  });
});
