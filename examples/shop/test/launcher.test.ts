/**
 * `npm start` as an operator meets it (startShop, real processes on loopback, temporary state
 * directories): it refuses to start when the shop could not serve — a port taken, the state directory
 * in use by a running control plane, no valid policy — with the reason, not a timeout; once ready it
 * keeps the shop running: a service or the control plane killed with -9 is reported and restarted (a
 * service rejoins with a fresh join token; one that dies while the control plane does not answer waits
 * for it), a stop on purpose is not, and a control plane that cannot be kept running stops the shop,
 * loudly. And `lockstep revoke --lift`
 * against the running shop: a revocation made by mistake is taken back — audited, refused for a
 * non-administrator and for a value that is not revoked, and honoured by the guards, also by one
 * that starts afresh afterwards. What each process is given of the launcher's environment (the KEK and the
 * database only to the control plane), and admin commands asked of other control planes (`adminVia`).
 */
import assert from 'node:assert/strict';
import { fork } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { main as lockstep } from '@lockstep/cli';
import { controlPlaneAgent, type WorkloadCredentials } from '@lockstep/workload';
import { call, capturedTxnToken, stolenCredentials } from '../drill/attacker.ts';
import {
  controlPlaneKek,
  freePortBase,
  serviceEnvironment,
  SHOP_POLICIES,
  startShop,
  TRUST_DOMAIN,
  type RunningShop,
} from '../launch.ts';

const scratch = mkdtempSync(join(tmpdir(), 'lockstep-launcher-'));
const dataDir = join(scratch, 'running');
const supervision: string[] = [];
const warnings: string[] = [];
const failures: string[] = [];
let shop: RunningShop;

before(async () => {
  shop = await startShop({
    dataDir,
    portBase: await freePortBase(),
    onSupervision: (line) => supervision.push(line),
    onWarning: (line) => warnings.push(line),
    onFailed: (reason) => failures.push(reason),
  });
});
after(async () => {
  await shop?.stop();
  rmSync(scratch, { recursive: true, force: true });
});

/** Polls `read` until it gives a value; fails after `limitMs` (generous: a slow machine is not a failure). */
async function eventually<T>(
  read: () => T | undefined | Promise<T | undefined>,
  what: string,
  limitMs = 30_000,
): Promise<T> {
  const started = Date.now();
  let last: unknown;
  for (;;) {
    try {
      const value = await read();
      if (value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() - started > limitMs)
      return assert.fail(`${what}: not within ${limitMs / 1000} s${last === undefined ? '' : ` (${String(last)})`}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

function listenOn(port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

describe('npm start refuses to start a shop that could not serve, with the reason', () => {
  it('a taken port: names it and LOCKSTEP_PORT_BASE, and starts nothing', async () => {
    const portBase = await freePortBase();
    const taken = await listenOn(portBase + 2);
    const fresh = join(scratch, 'port');
    try {
      await assert.rejects(startShop({ dataDir: fresh, portBase }), (error: Error) => {
        assert.equal(
          error.message,
          `port ${portBase + 2} (orders) on 127.0.0.1 is in use: stop what listens there, or choose other ports with LOCKSTEP_PORT_BASE (the shop uses six from there, and one more per replica; now ${portBase})`,
        );
        return true;
      });
      assert.equal(existsSync(join(fresh, 'control-plane.json')), false, 'no control plane was started');
    } finally {
      taken.close();
    }
  });

  it('no Python for the shipping service: names LOCKSTEP_PYTHON and how to install it, and starts nothing', async () => {
    const fresh = join(scratch, 'no-python');
    const previous = process.env.LOCKSTEP_PYTHON;
    process.env.LOCKSTEP_PYTHON = join(scratch, 'no-such-python3');
    try {
      await assert.rejects(startShop({ dataDir: fresh, portBase: await freePortBase() }), (error: Error) => {
        assert.equal(
          error.message,
          `the shop's shipping service runs on Python, and LOCKSTEP_PYTHON (${join(scratch, 'no-such-python3')}) was not found: ` +
            'install Python 3.9 or later (e.g. `apt install python3`, `brew install python`), or set LOCKSTEP_PYTHON to the path of a Python 3 interpreter',
        );
        return true;
      });
      assert.equal(existsSync(join(fresh, 'control-plane.json')), false, 'no control plane was started');
    } finally {
      if (previous === undefined) delete process.env.LOCKSTEP_PYTHON;
      else process.env.LOCKSTEP_PYTHON = previous;
    }
  });

  it('a shop service whose port is taken exits, naming the port', async () => {
    const taken = await listenOn(0);
    const { port } = taken.address() as { port: number };
    try {
      const child = fork(fileURLToPath(new URL('../services/payments.ts', import.meta.url)), [], {
        env: {
          ...process.env,
          SHOP_SERVICE: 'payments',
          SHOP_MODE: 'perimeter-only',
          SHOP_PORT: String(port),
          SHOP_URLS: '{}',
          SHOP_DATA_DIR: join(scratch, 'service'),
        },
        stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      });
      let output = '';
      child.stderr?.on('data', (chunk: Buffer) => {
        output += chunk.toString();
      });
      const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
      assert.notEqual(code, 0);
      assert.match(
        output,
        new RegExp(
          `"level":"error","service":"payments","message":"port ${port} on 127\\.0\\.0\\.1 is in use: stop what listens there, or choose other ports with LOCKSTEP_PORT_BASE`,
        ),
      );
    } finally {
      taken.close();
    }
  });

  it('no valid policy: rejects with the policy file and line, and stops the control plane it started', async () => {
    const fresh = join(scratch, 'policy');
    const policyDir = join(scratch, 'broken-policies');
    cpSync(SHOP_POLICIES, policyDir, { recursive: true });
    writeFileSync(
      join(policyDir, 'broken.cedar'),
      '@id("broken")\npermit (principal, action, resource)\n  when { context.nope };\n',
    );
    await assert.rejects(startShop({ dataDir: fresh, portBase: await freePortBase(), policyDir }), (error: Error) => {
      assert.match(
        error.message,
        /^no valid policy is in force, so the shop cannot serve: \S*broken-policies\/broken\.cedar:3: for policy `broken`, attribute `nope` in context .* not found .*\(and \d+ more\)\. Fix it \(`lockstep policy validate \S*broken-policies` lists every problem\) and start again$/,
      );
      return true;
    });
    assert.equal(existsSync(join(fresh, 'control-plane.lock')), false, 'the control plane stopped (its lock released)');
  });

  it('a control plane that cannot start: its own reason (the unusable key file), not a timeout', async () => {
    const fresh = join(scratch, 'corrupt');
    const previous = process.env.LOCKSTEP_HOME;
    process.env.LOCKSTEP_HOME = fresh;
    try {
      assert.equal(
        await lockstep(
          ['init', '--trust-domain', TRUST_DOMAIN],
          () => {},
          () => {},
        ),
        0,
      );
    } finally {
      if (previous === undefined) delete process.env.LOCKSTEP_HOME;
      else process.env.LOCKSTEP_HOME = previous;
    }
    const keyFile = join(fresh, 'keys', 'policy-signing.key.pem');
    writeFileSync(keyFile, 'not a key\n', { mode: 0o600 });
    await assert.rejects(startShop({ dataDir: fresh, portBase: await freePortBase() }), (error: Error) => {
      assert.ok(
        error.message.startsWith(`the control plane could not start (exit code 1): key file ${keyFile} is unusable: `),
        error.message,
      );
      assert.match(error.message, /Fix: restore it from a backup.*\(its log: .*control-plane\.log\)$/);
      return true;
    });
  });

  it("a second start on the state directory in use: refused with the running control plane's pid; the first still answers", async () => {
    const runtime = readFileSync(join(dataDir, 'control-plane.json'), 'utf8');
    const { pid } = JSON.parse(runtime) as { pid: number };
    await assert.rejects(
      startShop({ dataDir, portBase: await freePortBase() }),
      new RegExp(
        `the state directory ${dataDir.replaceAll('.', '\\.')} is in use by a running control plane \\(pid ${pid} at `,
      ),
    );
    assert.equal(readFileSync(join(dataDir, 'control-plane.json'), 'utf8'), runtime);
    const status = await shop.adminExit('policy', 'status');
    assert.equal(status.code, 0, status.err.join('\n'));
  });
});

describe('what each process of the shop is given', () => {
  it('the services get neither the key-encryption key nor the database; the control plane gets the KEK as given', () => {
    const env = {
      PATH: '/usr/bin',
      GATEWAY_RATE_SESSION: '600',
      LOCKSTEP_KEK: 'k1 inline',
      LOCKSTEP_KEK_FILE: '/etc/lockstep/kek',
      LOCKSTEP_POSTGRES_URL: 'postgres://lockstep@db/lockstep',
      LOCKSTEP_REPLICAS: '3',
    };
    assert.deepEqual(serviceEnvironment(env), { PATH: '/usr/bin', GATEWAY_RATE_SESSION: '600' });

    const dir = join(scratch, 'kek-choice');
    const said: string[] = [];
    const kekOf = (given: NodeJS.ProcessEnv) =>
      controlPlaneKek(given, 'postgres://lockstep@db/lockstep', dir, (line) => said.push(line));
    assert.deepEqual(kekOf({ LOCKSTEP_KEK_FILE: '/etc/lockstep/kek' }), { LOCKSTEP_KEK_FILE: '/etc/lockstep/kek' });
    // An inline KEK is passed on as it is: a development file beside it would make two ("both set").
    assert.deepEqual(kekOf({ LOCKSTEP_KEK: 'k1 inline' }), {});
    assert.deepEqual(kekOf({ LOCKSTEP_KEK: 'k1 inline', LOCKSTEP_KEK_FILE: '' }), {});
    assert.equal(existsSync(join(dir, 'kek')), false, 'no development KEK made');
    assert.deepEqual(kekOf({ LOCKSTEP_KEK_FILE: '' }), { LOCKSTEP_KEK_FILE: join(dir, 'kek') }, 'empty is unset');
    assert.match(said.join('\n'), /created a development key-encryption key/);
    assert.deepEqual(
      controlPlaneKek({}, undefined, dir, () => {}),
      {},
      'SQLite: none',
    );
  });

  it('an admin command asked of other control planes (adminVia) leaves the others running meanwhile as they are', async () => {
    const urlsBefore = process.env.LOCKSTEP_CP_URLS;
    // Started first, still running while the other starts: the other is asked of the shop's control plane.
    const [elsewhere, usual] = await Promise.all([
      shop.adminVia('https://127.0.0.1:9', 'services'),
      shop.adminExit('services'),
    ]);
    assert.equal(usual.code, 0, usual.err.join('\n'));
    assert.equal(elsewhere.code, 2);
    assert.match(elsewhere.err.join('\n'), /the control plane at https:\/\/127\.0\.0\.1:9 is not running/);
    const after = await shop.adminExit('services');
    assert.equal(after.code, 0, after.err.join('\n'));
    assert.equal(process.env.LOCKSTEP_CP_URLS, urlsBefore);
  });
});

describe('lockstep revoke --lift, against the running shop', () => {
  let gateway: WorkloadCredentials;
  let token: string;
  const listOrders = async () =>
    (await call(`${shop.urls.orders}/orders`, { headers: { 'txn-token': token }, as: gateway })).status;

  it('takes back a revocation made by mistake: audited, refused for a workload, honoured by the guard', async () => {
    gateway = await stolenCredentials(shop, 'gateway');
    token = await capturedTxnToken(shop, gateway, 'alice', shop.users.alice?.password ?? '');
    assert.equal(await listOrders(), 200);

    await shop.admin('revoke', 'sub', 'alice', '--reason', 'meant mallory');
    await eventually(async () => ((await listOrders()) === 401 ? true : undefined), "orders refuses alice's token");

    // A workload (the gateway's SVID, stolen or not) cannot lift anything: only an administrator.
    const agent = controlPlaneAgent(TRUST_DOMAIN, {
      cert: gateway.chainPem,
      key: gateway.keyPem,
      ca: gateway.bundlePem,
    });
    try {
      const refused = await request(`${shop.urls.controlPlane}/v1/admin/revocations/lift`, {
        method: 'POST',
        dispatcher: agent,
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ kind: 'sub', value: 'alice', reason: 'let me in' }),
      });
      assert.equal(refused.statusCode, 403);
      assert.equal(((await refused.body.json()) as { error: string }).error, 'LOCKSTEP_CP_ADMIN_REQUIRED');
    } finally {
      await agent.close();
    }
    assert.equal(await listOrders(), 401, 'still revoked');

    const [lifted = ''] = await shop.admin('revoke', '--lift', 'sub', 'alice', '--reason', 'revoked by mistake');
    assert.match(
      lifted,
      /^lifted the revocation of sub alice \(feed position \d+\): guards accept it again within a second$/,
    );
    await eventually(
      async () => ((await listOrders()) === 200 ? true : undefined),
      "orders accepts alice's token again",
    );

    const again = await shop.adminExit('revoke', '--lift', 'sub', 'alice', '--reason', 'twice');
    assert.equal(again.code, 2);
    assert.match(
      again.err.join('\n'),
      /refused \(404 LOCKSTEP_CP_NOT_REVOKED\): nothing is revoked under this value: nothing to lift: no revocation holds for sub "alice" \(never revoked, or lifted already\)/,
    );

    // The trail holds every step, with who took it.
    const trail = await eventually(() => {
      const events = adminEvents();
      return events.some((event) => event.reason === 'LOCKSTEP_CP_NOT_REVOKED') &&
        events.some((event) => event.reason === 'LOCKSTEP_CP_ADMIN_REQUIRED')
        ? events
        : undefined;
    }, 'the admin events in the trail');
    const admin = 'spiffe://shop.test/admin/admin';
    const steps = trail.map((event) =>
      [event.action, event.resource, event.decision, event.reason, event.caller].join(' '),
    );
    // An administrator's calls in the order they ran (a failed one: its authorisation, then its failure);
    // the workload's refused call names no resource: it was refused before its body was read.
    assert.deepEqual(
      steps.filter((step) => !step.includes('ADMIN_REQUIRED')),
      [
        `admin:revoke alice allow LOCKSTEP_ALLOW ${admin}`,
        `admin:revoke.lift alice allow LOCKSTEP_ALLOW ${admin}`,
        `admin:revoke.lift alice allow LOCKSTEP_ALLOW ${admin}`,
        `admin:revoke.lift alice deny LOCKSTEP_CP_NOT_REVOKED ${admin}`,
      ],
    );
    assert.deepEqual(
      steps.filter((step) => step.includes('ADMIN_REQUIRED')),
      [`admin:revoke.lift control-plane deny LOCKSTEP_CP_ADMIN_REQUIRED ${gateway.spiffeId}`],
    );
    const verified = await shop.adminExit('audit', 'verify');
    assert.equal(verified.code, 0, verified.out.join('\n'));
  });

  it('kill -9 of orders: reported and restarted with a fresh join token; it answers again, and the lift holds in its new guard', async () => {
    const before = supervision.length;
    shop.signal('orders', 'SIGKILL');
    await eventually(
      () => supervision.slice(before).find((line) => line.startsWith('orders restarted: ready again')),
      'orders restarted',
    );
    const lines = supervision.slice(before);
    assert.match(
      lines[0] ?? '',
      new RegExp(
        `^orders died \\(killed by SIGKILL\\) after [\\d.]+ s; its log: ${join(dataDir, 'logs', 'orders.log').replaceAll('.', '\\.')}$`,
      ),
    );
    assert.match(lines[1] ?? '', /^restarting orders in 1\.0 s \(restart 1 of at most 4 in a row\)$/);
    assert.equal((await call(`${shop.urls.orders}/health`)).status, 200);
    // A guard that starts from nothing reads the feed from its beginning: the lifted entry, not the revocation.
    await eventually(
      async () => ((await listOrders()) === 200 ? true : undefined),
      'the restarted orders accepts alice',
    );
  });

  it('kill -9 of the control plane: reported and restarted; it takes over the lock its predecessor left', async () => {
    const before = supervision.length;
    shop.signal('controlPlane', 'SIGKILL');
    await eventually(
      () => supervision.slice(before).find((line) => line.startsWith('the control plane restarted: ready again')),
      'the control plane restarted',
    );
    assert.match(
      supervision[before] ?? '',
      /^the control plane died \(killed by SIGKILL\) after [\d.]+ s; its log: .*control-plane\.log$/,
    );
    assert.ok(
      warnings.some((line) =>
        /^WARNING took over .*control-plane\.lock: the control plane that held it \(pid \d+\) is not running any more/.test(
          line,
        ),
      ),
      warnings.join('\n'),
    );
    const services = await shop.admin('services');
    assert.match(services.join('\n'), /\norders +enforce/);
  });

  it('a service that dies while the control plane does not answer (SIGSTOP) waits for it, and is restarted once it answers', async () => {
    const before = supervision.length;
    shop.signal('controlPlane', 'SIGSTOP');
    let waiting: string;
    try {
      shop.signal('orders', 'SIGKILL');
      // The join token's deadline (10 s) and the probe's (3 s) after the first restart's delay (1 s).
      waiting = await eventually(
        () => supervision.slice(before).find((line) => line.startsWith('orders could not restart')),
        'the restart waiting',
        90_000,
      );
    } finally {
      shop.signal('controlPlane', 'SIGCONT');
    }
    assert.match(
      waiting,
      new RegExp(
        `^orders could not restart: the control plane at ${shop.urls.controlPlane.replaceAll('.', '\\.')} does not answer ` +
          '\\(no join token: the control plane did not answer within 10 s\\); trying again in [\\d.]+ s \\(not counted as a crash: the cause is not in it\\)$',
      ),
    );
    await eventually(
      () => supervision.slice(before).find((line) => line === 'orders restarted: ready again'),
      'orders restarted',
      90_000,
    );
    assert.ok(
      !supervision.slice(before).some((line) => line.startsWith('GAVE UP')),
      supervision.slice(before).join('\n'),
    );
    assert.equal((await call(`${shop.urls.orders}/health`)).status, 200);
  });

  it('a stop on purpose is not followed by a restart', async () => {
    const before = supervision.length;
    await shop.kill('payments');
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    assert.deepEqual(supervision.slice(before), []);
    assert.notEqual((await call(`${shop.urls.payments}/health`)).status, 200);
  });
});

// Last: it ends the shop.
describe('npm start when the control plane cannot be kept running', () => {
  it("gives up on it, stops every service, and says so, naming the control plane's log", async () => {
    const before = supervision.length;
    // Read at every start, not by the running control plane: each restart exits, naming the file.
    writeFileSync(join(dataDir, 'keys', 'policy-signing.key.pem'), 'not a key\n', { mode: 0o600 });
    shop.signal('controlPlane', 'SIGKILL');
    // Five crashes in a row with the default delays (1, 2, 4 and 8 s between them).
    const [reason = ''] = await eventually(
      () => (failures.length > 0 ? failures : undefined),
      'the shop stopped',
      180_000,
    );
    assert.equal(
      reason,
      `STOPPED: the control plane could not be kept running (its log says why: ${join(dataDir, 'logs', 'control-plane.log')}), ` +
        'and the shop cannot serve without it, so every service was stopped. Fix what the log says and run npm start again',
    );
    const gaveUp = supervision.slice(before).filter((line) => line.startsWith('GAVE UP'));
    assert.deepEqual(gaveUp, [
      `GAVE UP restarting the control plane: it died 5 times in a row, each within 30 s of starting. Its log says why: ${join(dataDir, 'logs', 'control-plane.log')}. Fix that and run npm start again`,
    ]);
    assert.ok(
      supervision
        .slice(before)
        .some((line) =>
          /^the control plane could not restart: .*key file .*policy-signing\.key\.pem is unusable/.test(line),
        ),
      supervision.slice(before).join('\n'),
    );
    for (const service of ['gateway', 'orders', 'inventory'] as const) {
      assert.equal((await call(`${shop.urls[service]}/health`)).status, null, `${service} was stopped`);
    }
    assert.equal(failures.length, 1);
  });
});

interface AdminEvent {
  action: string;
  decision: string;
  reason: string;
  caller: string | null;
  resource: string;
}

/** The control plane's own events in its store, read as anyone with the file can. */
function adminEvents(): AdminEvent[] {
  const db = new DatabaseSync(join(dataDir, 'control-plane.db'), { readOnly: true });
  try {
    const rows = db
      .prepare('SELECT event FROM audit_events WHERE source = ? ORDER BY seq')
      .all(`spiffe://${TRUST_DOMAIN}/lockstep/control-plane`) as { event: string }[];
    return rows
      .map((row) => JSON.parse(row.event) as AdminEvent)
      .filter((event) => event.action.startsWith('admin:revoke'));
  } finally {
    db.close();
  }
}
