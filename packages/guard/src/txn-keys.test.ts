import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:https';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { exportJWK, generateKeyPair, type JWK } from 'jose';
import { Agent } from 'undici';
import { createTestCa, createTxnTokenMinter, type TxnTokenMinter } from '@lockstep/testkit';
import { GuardConfigError } from './errors.ts';
import { createRemoteKeySource, createStaticKeySource, type TxnKeySource } from './txn-keys.ts';

let minterA: TxnTokenMinter;
let minterB: TxnTokenMinter;

before(async () => {
  minterA = await createTxnTokenMinter({ trustDomain: 'shop.test', kid: 'key-a' });
  minterB = await createTxnTokenMinter({ trustDomain: 'shop.test', kid: 'key-b' });
});

/** A JWKS URL where nothing listens: a replica of the control plane that is down. */
async function deadJwksUrl(): Promise<string> {
  const server = createNetServer().listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return `https://127.0.0.1:${port}/jwks`;
}

function publicJwk(minter: TxnTokenMinter): JWK {
  return minter.jwks.keys[0] as JWK;
}

async function assertConfigError(promise: Promise<unknown>, fragment: string): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof GuardConfigError, String(error));
    assert.equal(error.code, 'LOCKSTEP_CONFIG_INVALID');
    assert.ok(error.message.includes(fragment), `"${error.message}" should include "${fragment}"`);
    return true;
  });
}

describe('createStaticKeySource', () => {
  it('serves the ES256 keys of the set by kid', async () => {
    const source = await createStaticKeySource({ keys: [publicJwk(minterA), publicJwk(minterB)] });
    assert.deepEqual(source.kids().sort(), ['key-a', 'key-b']);
    const key = source.get('key-a');
    assert.ok(key !== undefined);
    assert.equal(key.type, 'public');
    assert.equal((key.algorithm as { namedCurve?: string }).namedCurve, 'P-256');
    assert.equal(source.get('key-c'), undefined);
    await source.refresh();
    source.close();
    assert.deepEqual(source.kids().sort(), ['key-a', 'key-b']);
  });

  it('refuses a key that holds a private part', async () => {
    const { privateKey } = await generateKeyPair('ES256', { extractable: true });
    const jwk = { ...(await exportJWK(privateKey)), kid: 'leaked' };
    assert.equal(typeof jwk.d, 'string');
    await assertConfigError(createStaticKeySource({ keys: [jwk] }), 'key leaked contains a private part ("d")');
  });

  it('refuses an ES256 key without a kid', async () => {
    const { kid: _kid, ...withoutKid } = publicJwk(minterA);
    await assertConfigError(createStaticKeySource({ keys: [withoutKid] }), 'needs a "kid"');
    await assertConfigError(createStaticKeySource({ keys: [{ ...withoutKid, kid: '' }] }), 'needs a "kid"');
  });

  it('refuses an empty set and a value that is not a JWKS', async () => {
    await assertConfigError(createStaticKeySource({ keys: [] }), 'holds no ES256 (EC P-256) key');
    await assertConfigError(createStaticKeySource(null), 'expected a JWKS object');
    await assertConfigError(createStaticKeySource([publicJwk(minterA)]), 'expected a JWKS object');
  });

  it('ignores RSA keys, other curves and keys marked for another algorithm or use', async () => {
    const rsa = await exportJWK((await generateKeyPair('RS256', { extractable: true })).publicKey);
    const p384 = await exportJWK((await generateKeyPair('ES384', { extractable: true })).publicKey);
    const source = await createStaticKeySource({
      keys: [
        { ...rsa, kid: 'rsa' },
        { ...p384, kid: 'p384' },
        { ...publicJwk(minterB), kid: 'es384-labelled', alg: 'ES384' },
        { ...publicJwk(minterB), kid: 'for-encryption', use: 'enc' },
        publicJwk(minterA),
      ],
    });
    assert.deepEqual(source.kids(), ['key-a']);
    // Ignored keys are skipped before the kid and private-part checks, so they cannot break the set.
    await assertConfigError(createStaticKeySource({ keys: [{ ...rsa, kid: 'rsa' }] }), 'holds no ES256');
  });
});

describe('createRemoteKeySource', () => {
  let server: Server;
  let agent: Agent;
  let url: string;
  let hits = 0;
  let answer: { status: number; body: string } = { status: 200, body: '' };
  const sources: TxnKeySource[] = [];

  const serve = (status: number, body: unknown) => {
    answer = { status, body: typeof body === 'string' ? body : JSON.stringify(body) };
  };

  before(async () => {
    const ca = await createTestCa({ trustDomain: 'shop.test' });
    const cert = await ca.issueCert({ dnsNames: ['localhost'], uris: ['spiffe://shop.test/svc/control-plane'] });
    server = createServer({ cert: cert.chainPem, key: cert.keyPem }, (_request, response) => {
      hits++;
      response.writeHead(answer.status, { 'content-type': 'application/json' }).end(answer.body);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `https://127.0.0.1:${(server.address() as AddressInfo).port}/jwks`;
    agent = new Agent({ connect: { ca: ca.bundlePem, checkServerIdentity: () => undefined } });
  });

  after(async () => {
    for (const source of sources) source.close();
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await agent.close();
  });

  async function open(
    options: { refreshSeconds?: number; cooldownSeconds?: number; errors?: Error[] } = {},
  ): Promise<TxnKeySource> {
    const errors = options.errors;
    const source = await createRemoteKeySource({
      url,
      dispatcher: agent,
      refreshSeconds: options.refreshSeconds ?? 3600,
      cooldownSeconds: options.cooldownSeconds ?? 0,
      ...(errors
        ? {
            onError: (error: Error) => {
              errors.push(error);
            },
          }
        : {}),
    });
    sources.push(source);
    return source;
  }

  it('loads the set at start, picks up a new key on refresh and keeps the last good set through failures', async () => {
    serve(200, { keys: [publicJwk(minterA)] });
    const errors: Error[] = [];
    const source = await open({ errors });
    assert.deepEqual(source.kids(), ['key-a']);
    assert.ok(source.get('key-a') !== undefined);

    serve(200, { keys: [publicJwk(minterA), publicJwk(minterB)] });
    await source.refresh();
    assert.deepEqual(source.kids().sort(), ['key-a', 'key-b']);
    assert.equal(errors.length, 0);

    const failures: Array<[string, () => void | Promise<void>, RegExp]> = [
      ['HTTP 500', () => serve(500, 'boom'), /answered 500/],
      ['invalid JSON', () => serve(200, '{"keys": ['), /JSON|Unexpected|Expected/],
      ['an empty key set', () => serve(200, { keys: [] }), /holds no ES256 key; keeping the last known good set/],
      ['not a JWKS', () => serve(200, { hello: 'world' }), /expected a JWKS object/],
    ];
    for (const [what, arrange, message] of failures) {
      await arrange();
      const errorsBefore: number = errors.length;
      await source.refresh();
      assert.equal(errors.length, errorsBefore + 1, `onError is called for ${what}`);
      assert.match(errors.at(-1)?.message ?? '', message, what);
      assert.deepEqual(source.kids().sort(), ['key-a', 'key-b'], `last known good keys kept after ${what}`);
      assert.ok(source.get('key-b') !== undefined);
    }
  });

  it('keeps the last good set when the server is gone', async () => {
    // A server of its own, so that closing it does not disturb the other tests.
    const ca = await createTestCa({ trustDomain: 'shop.test' });
    const cert = await ca.issueCert({ dnsNames: ['localhost'] });
    const body = JSON.stringify({ keys: [publicJwk(minterA)] });
    const lone = createServer({ cert: cert.chainPem, key: cert.keyPem }, (_request, response) => response.end(body));
    await new Promise<void>((resolve) => lone.listen(0, '127.0.0.1', resolve));
    const loneAgent = new Agent({ connect: { ca: ca.bundlePem, checkServerIdentity: () => undefined } });
    const errors: Error[] = [];
    const source = await createRemoteKeySource({
      url: `https://127.0.0.1:${(lone.address() as AddressInfo).port}/jwks`,
      dispatcher: loneAgent,
      refreshSeconds: 3600,
      cooldownSeconds: 0,
      onError: (error) => {
        errors.push(error);
      },
    });
    try {
      assert.deepEqual(source.kids(), ['key-a']);
      lone.closeAllConnections();
      await new Promise<void>((resolve) => lone.close(() => resolve()));
      await source.refresh();
      assert.equal(errors.length, 1);
      assert.deepEqual(source.kids(), ['key-a']);
      assert.ok(source.get('key-a') !== undefined);
    } finally {
      source.close();
      await loneAgent.close();
    }
  });

  it('fetches at most once per cooldown, and once for concurrent refreshes', async () => {
    serve(200, { keys: [publicJwk(minterA)] });
    const start = hits;
    const cooled = await open({ cooldownSeconds: 60 });
    assert.equal(hits, start + 1);
    serve(200, { keys: [publicJwk(minterB)] });
    await cooled.refresh();
    await cooled.refresh();
    assert.equal(hits, start + 1, 'no fetch within the cooldown');
    assert.deepEqual(cooled.kids(), ['key-a']);

    const eager = await open({ cooldownSeconds: 0 });
    const afterOpen = hits;
    await Promise.all([eager.refresh(), eager.refresh(), eager.refresh()]);
    assert.equal(hits, afterOpen + 1, 'concurrent refreshes share one fetch');
  });

  it('refuses to start when the first load fails, naming the URL and what to check', async () => {
    serve(503, 'unavailable');
    await assertConfigError(open(), `could not load the Txn-Token JWKS from ${url}: JWKS ${url} answered 503`);
    await assertConfigError(open(), 'Check txnTokenKeys.url');
    serve(200, { keys: [] });
    await assertConfigError(open(), 'holds no ES256 key');
  });

  it('with several URLs (replicas): past a dead first one; refused only when every one fails, naming each', async () => {
    const dead = await deadJwksUrl();
    serve(200, { keys: [publicJwk(minterA)] });
    const errors: Error[] = [];
    const source = await createRemoteKeySource({
      urls: [dead, url],
      dispatcher: agent,
      refreshSeconds: 3600,
      cooldownSeconds: 0,
      onError: (error) => {
        errors.push(error);
      },
    });
    sources.push(source);
    assert.deepEqual(source.kids(), ['key-a']);
    serve(200, { keys: [publicJwk(minterB)] });
    const before = hits;
    await source.refresh();
    assert.deepEqual([source.kids(), hits - before, errors.length], [['key-b'], 1, 0], 'the one that answered first');

    serve(503, 'unavailable');
    await source.refresh();
    assert.deepEqual(source.kids(), ['key-b'], 'every URL failed: the last good set kept');
    assert.match(errors[0]?.message ?? '', new RegExp(`JWKS ${url} answered 503; ${dead}: .*ECONNREFUSED`));

    const other = await deadJwksUrl();
    await assertConfigError(
      createRemoteKeySource({ urls: [dead, other], dispatcher: agent, refreshSeconds: 3600, cooldownSeconds: 0 }),
      `could not load the Txn-Token JWKS from any of its URLs: ${dead}: connect ECONNREFUSED`,
    );
    await assertConfigError(
      createRemoteKeySource({ urls: [dead, other], dispatcher: agent, refreshSeconds: 3600, cooldownSeconds: 0 }),
      `; ${other}: connect ECONNREFUSED`,
    );
    await assert.rejects(
      createRemoteKeySource({ url, urls: [url], refreshSeconds: 3600, cooldownSeconds: 0 }),
      /either url: .* or urls: \[\.\.\.\], not both/,
    );
  });

  it('refreshes on its timer, and close() stops the timer', async () => {
    serve(200, { keys: [publicJwk(minterA)] });
    const start = hits;
    const source = await open({ refreshSeconds: 0.02, cooldownSeconds: 60 });
    serve(200, { keys: [publicJwk(minterB)] });
    for (let waited = 0; hits < start + 3 && waited < 5000; waited += 10) await sleep(10);
    assert.ok(hits >= start + 3, `timer refreshed (${hits - start} fetches)`);
    assert.deepEqual(source.kids(), ['key-b']);
    source.close();
    await sleep(50);
    const closedAt = hits;
    await sleep(200);
    assert.equal(hits, closedAt, 'no fetch after close()');
  });
});
