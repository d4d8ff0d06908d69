/**
 * Nothing lost on a crash of a guard's process: a guarded service runs in a child process with a
 * collector; it is killed with SIGKILL while decisions are in its audit file (or, without one, its
 * journal in the spool directory) but not yet shipped, and started again on the same files. Then
 * every decision in the file is in the trail, in the one stream the first process began, without a
 * gap; a clean stop ends that stream — on SQLite and on PostgreSQL.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import { Agent, request } from 'undici';
import { createTxnTokenMinter, testPostgres } from '@lockstep/testkit';
import { createJoinToken, joinControlPlane, type PolicyService } from '@lockstep/control-plane';
import { assembleControlPlane, COLLECTOR_PATH, verifyTrail, type StoreLocation } from '../src/index.ts';

const TD = 'shop.test';
const FIXTURE = fileURLToPath(new URL('./fixtures/crash-guard.ts', import.meta.url));
const scratch = mkdtempSync(join(tmpdir(), 'lockstep-crash-'));
const postgres = await testPostgres();

after(async () => {
  rmSync(scratch, { recursive: true, force: true });
  await postgres.cleanup();
});

const backends: { name: string; skip: string | false; location(): StoreLocation }[] = [
  { name: 'sqlite', skip: false, location: () => ({ sqlite: join(scratch, `${randomBytes(4).toString('hex')}.db`) }) },
  { name: 'postgres', skip: postgres.skip, location: () => ({ postgres: postgres.url, schema: postgres.schema() }) },
];

interface Child {
  readonly process: ChildProcess;
  readonly origin: string;
  readonly exited: Promise<void>;
  /** What it wrote to stderr (its guard's warnings), for the assertion messages. */
  stderr(): string;
}

/** Starts the guarded service and waits until it listens. */
async function startChild(configPath: string): Promise<Child> {
  const child = spawn(process.execPath, [FIXTURE, configPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const port = await new Promise<number>((resolve, reject) => {
    let stdout = '';
    const timeout = setTimeout(() => reject(new Error(`the guarded service did not start: ${stderr}`)), 30_000);
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
      const line = stdout.split('\n').find((candidate) => candidate.startsWith('{"port"'));
      if (line === undefined) return;
      clearTimeout(timeout);
      resolve((JSON.parse(line) as { port: number }).port);
    });
    void exited.then(() => reject(new Error(`the guarded service exited: ${stderr}`)));
  });
  return { process: child, origin: `https://127.0.0.1:${port}`, exited, stderr: () => stderr };
}

async function until(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 30_000, pollMs = 25) {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
}

/** The guarded service is killed with SIGKILL and started again; every decision of the file reaches the trail. */
async function crashAndRestart(location: StoreLocation, withAuditFile: boolean): Promise<void> {
  const dir = mkdtempSync(join(scratch, 'crash-'));
  const controlPlane = await assembleControlPlane({
    trustDomain: TD,
    keyDir: join(dir, 'keys'),
    store: location,
    port: 0,
    watchPolicy: false,
    policyDir: new URL('../../guard/example/policies/', import.meta.url).pathname,
    checkpointIntervalMs: 3_600_000,
    detection: { sweepMs: 3_600_000 },
    output: { warning: () => {} },
  });
  const { ca, store, auditKeys } = controlPlane;
  const policy = controlPlane.policy as PolicyService;
  const minter = await createTxnTokenMinter({ trustDomain: TD });
  const enrol = async (service: string) => {
    const { token } = await createJoinToken(store, ca, { service, createdBy: 'cli' });
    return joinControlPlane({ url: controlPlane.url, trustDomain: TD, joinToken: token, service });
  };
  const orders = await enrol('orders');
  const gateway = await enrol('gateway');
  const file = (name: string, content: string) => {
    const path = join(dir, name);
    writeFileSync(path, content, { mode: 0o600 });
    return path;
  };
  const spoolDir = join(dir, 'spool');
  const auditFile = withAuditFile ? join(dir, 'audit', 'orders.jsonl') : null;
  // The file the decisions are in: 130 lines fit in the first segment of the journal.
  const journal = auditFile ?? join(spoolDir, 'journal-1.jsonl');
  const configPath = file(
    'config.json',
    JSON.stringify({
      trustDomain: TD,
      certFile: file('orders.pem', orders.chainPem),
      keyFile: file('orders.key', orders.keyPem),
      bundleFile: file('bundle.pem', orders.bundlePem),
      txnJwksFile: file('txn-jwks.json', JSON.stringify(minter.jwks)),
      policyKeysFile: file('policy-keys.json', JSON.stringify({ keys: [...policy.publicJwks.keys] })),
      policyBundleFile: file('policy-bundle.jws', (await policy.bundleFor('orders'))?.bundle ?? ''),
      auditFile,
      collectorUrl: `${controlPlane.url}${COLLECTOR_PATH}`,
      spoolDir,
    }),
  );
  const tls = { cert: gateway.chainPem, key: gateway.keyPem, ca: gateway.bundlePem };
  const agent = new Agent({ connect: { ...tls, checkServerIdentity: () => undefined } });
  const token = await minter.mint({ sub: 'alice', tctx: { roles: ['customer'] }, req_wl: gateway.spiffeId });
  const requestId = (json: string) => (JSON.parse(json) as { requestId: string }).requestId;
  const trail = async () => {
    return (await store.auditEvents(orders.spiffeId, 0, 1_000_000)).map((stored) => requestId(stored.event));
  };
  const fileIds = () => {
    // Complete lines only: the guard may be writing the next one while this reads.
    return existsSync(journal)
      ? readFileSync(journal, 'utf8').split('\n').slice(0, -1).filter(Boolean).map(requestId)
      : [];
  };
  const streams = async () => (await store.auditStreams()).filter((stream) => stream.source === orders.spiffeId);

  let child: Child | null = await startChild(configPath);
  try {
    const call = async (origin: string, index: number) => {
      const headers = { 'txn-token': token };
      const response = await request(`${origin}/orders/${index}`, { dispatcher: agent, headers });
      await response.body.dump();
      assert.equal(response.statusCode, 200);
    };
    const first = child;
    for (let index = 0; index < 100; index += 1) await call(first.origin, index);
    // The guard ships once a second: right after a round has shipped these, ...
    await until(async () => (await trail()).length === 100, 'the first 100 decisions are in the trail');
    // ... the last ones come in, reach the audit file, and the process dies before the next round.
    await Promise.all(Array.from({ length: 30 }, (_, index) => call(first.origin, 100 + index)));
    await until(() => fileIds().length === 130, 'all 130 decisions are in the file', 10_000, 2);
    first.process.kill('SIGKILL');
    await first.exited;
    const inFile = fileIds();
    const atKill = await trail();
    assert.ok(
      atKill.length < inFile.length,
      `some decisions in the file were not shipped at the kill (trail ${atKill.length}, file ${inFile.length})`,
    );
    const [before] = await streams();
    assert.equal((await streams()).length, 1);

    child = await startChild(configPath);
    const second = child;
    const everything = async () => (await trail()).length >= inFile.length;
    await until(everything, `the trail holds every decision of the file\n${second.stderr()}`);
    const shipped = await trail();
    assert.deepEqual([...shipped].sort(), [...inFile].sort(), 'every decision in the file is in the trail, once');
    const [stream, ...others] = await streams();
    assert.deepEqual(others, [], `one stream (${JSON.stringify(await streams())})`);
    assert.equal(stream?.stream, before?.stream, 'the restarted process resumed the stream of the killed one');
    assert.deepEqual(
      [stream?.lastStreamSeq, stream?.gaps, stream?.dropped],
      [inFile.length, 0, 0],
      'positions 1…n, no gap, nothing dropped',
    );

    // A clean stop ends the stream.
    second.process.kill('SIGTERM');
    await second.exited;
    child = null;
    const [closed] = await streams();
    assert.ok(closed?.closedAt !== null && closed?.closedAt !== undefined, 'the final batch closed the stream');
    assert.equal(closed.written, inFile.length);
    await controlPlane.checkpointer.checkpoint();
    const report = await verifyTrail(store, auditKeys.publicJwks());
    assert.deepEqual(report.problems, []);
  } finally {
    if (child !== null) {
      child.process.kill('SIGKILL');
      await child.exited;
    }
    await agent.close();
    await controlPlane.close();
  }
}

for (const backend of backends) {
  describe(`a guard's process killed with SIGKILL (${backend.name})`, { skip: backend.skip }, () => {
    it('ships after the restart what its audit file held, in the same stream, without a gap', async () => {
      await crashAndRestart(backend.location(), true);
    });
    it('ships after the restart what its own journal held, in the same stream, without a gap', async () => {
      await crashAndRestart(backend.location(), false);
    });
  });
}
