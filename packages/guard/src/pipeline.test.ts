/**
 * The pipeline fails closed when one of its steps fails — also in dry run, where a would-be denial
 * passes but a failure never does. A fault is injected into one step (a Txn-Token step or a policy
 * engine that throws, as a broken key store or a crashed engine would); the other steps are the real
 * ones, over a real TLS connection. Written for what the mutation run found untested
 * (docs/mutation.md): nothing from outside the process can make a step throw.
 */
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { connect, createServer, type TLSSocket } from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { createPolicyEngine, loadPolicyDir, type PolicyEngine } from '@lockstep/policy';
import { createTestCa, createTxnTokenMinter, type TestCa, type TxnTokenMinter } from '@lockstep/testkit';
import { GuardError } from './errors.ts';
import { createPipeline, type InboundRequest, type PipelineOptions } from './pipeline.ts';
import { Revocations } from './revocations.ts';
import { routeSecurity } from './routes.ts';
import { createAuthorizeStep } from './steps/authorize.ts';
import { createTransportStep } from './steps/transport.ts';
import { createTxnTokenStep, type TxnTokenStep } from './steps/txn-token.ts';
import { createStaticKeySource } from './txn-keys.ts';

const TRUST_DOMAIN = 'shop.test';
const POLICY_DIR = new URL('../example/policies/', import.meta.url).pathname;
const READ = routeSecurity('GET', '/orders/:id', { action: 'orders:read' }, 'GET /orders/:id');

let ca: TestCa;
let minter: TxnTokenMinter;
let engine: PolicyEngine;
let gatewaySocket: TLSSocket;
const cleanup: Array<() => void> = [];

before(async () => {
  ca = await createTestCa({ trustDomain: TRUST_DOMAIN });
  minter = await createTxnTokenMinter({ trustDomain: TRUST_DOMAIN });
  engine = createPolicyEngine();
  engine.load(await loadPolicyDir(POLICY_DIR));
  gatewaySocket = await serverSideOf(await ca.issueSvid({ service: 'gateway' }));
});
after(() => {
  for (const close of cleanup) close();
});

/** The server's end of a real mTLS connection from `client`. */
async function serverSideOf(client: { chainPem: string; keyPem: string }): Promise<TLSSocket> {
  const serverCert = await ca.issueSvid({ service: 'orders' });
  const server = createServer({
    cert: serverCert.chainPem,
    key: serverCert.keyPem,
    ca: ca.bundlePem,
    requestCert: true,
    rejectUnauthorized: false,
  });
  const accepted = new Promise<TLSSocket>((resolve) => server.once('secureConnection', resolve));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const socket = connect({
    host: '127.0.0.1',
    port: (server.address() as AddressInfo).port,
    ca: ca.bundlePem,
    cert: client.chainPem,
    key: client.keyPem,
    checkServerIdentity: () => undefined,
  });
  socket.on('error', () => {});
  const serverSide = await accepted;
  server.close();
  cleanup.push(
    () => socket.destroy(),
    () => serverSide.destroy(),
  );
  return serverSide;
}

function request(token: string): InboundRequest {
  return {
    socket: gatewaySocket,
    method: 'GET',
    httpVersion: '1.1',
    headers: { host: 'orders', 'txn-token': token },
    rawHeaders: ['Host', 'orders', 'Txn-Token', token],
  };
}

async function realTxnTokenStep(): Promise<TxnTokenStep> {
  return createTxnTokenStep({
    trustDomain: TRUST_DOMAIN,
    keys: await createStaticKeySource(minter.jwks),
    revocations: new Revocations(),
    maxLifetimeSeconds: 300,
    clockSkewSeconds: 30,
    maxTokenBytes: 8192,
    cacheSize: 10,
  });
}

function pipelineWith(overrides: Partial<PipelineOptions>, internalErrors: unknown[]) {
  return createPipeline({
    service: 'orders',
    trustDomain: TRUST_DOMAIN,
    dryRun: true,
    transport: createTransportStep({ trustDomain: TRUST_DOMAIN, isRevokedSpiffeId: () => false }),
    txnToken: {
      verify: () => {
        throw new Error('unused');
      },
      stats: () => ({ hits: 0, verified: 0, size: 0, bytes: 0 }),
    },
    authorize: createAuthorizeStep({ service: 'orders', engine }),
    onInternalError: (error) => internalErrors.push(error),
    ...overrides,
  });
}

describe('pipeline: a failing step is a refusal, in dry run too', () => {
  it('refuses (LOCKSTEP_ERR_INTERNAL) when the Txn-Token step throws, and reports the error', async () => {
    const internalErrors: unknown[] = [];
    const broken = new TypeError('key store unreadable');
    const pipeline = pipelineWith(
      {
        txnToken: {
          verify: () => {
            throw broken;
          },
          stats: () => ({ hits: 0, verified: 0, size: 0, bytes: 0 }),
        },
      },
      internalErrors,
    );
    const admission = await pipeline.admit(request(await minter.mint()), READ);
    assert.equal(admission.allowed, false, 'a failure is never let through, even in dry run');
    assert.ok(admission.refusal instanceof GuardError);
    const {
      reason,
      dryRun,
      refusal: { status },
    } = admission;
    assert.deepEqual([reason, status, dryRun], ['LOCKSTEP_ERR_INTERNAL', 500, false]);
    assert.deepEqual(internalErrors, [broken]);
  });

  it('refuses (LOCKSTEP_ERR_INTERNAL) when the policy engine throws; a would-be denial still passes', async () => {
    const internalErrors: unknown[] = [];
    const crash = () => {
      throw new RangeError('engine crashed');
    };
    const crashing: PolicyEngine = Object.create(engine, { authorize: { value: crash } });
    const authorize = createAuthorizeStep({ service: 'orders', engine: crashing });
    const failing = pipelineWith({ txnToken: await realTxnTokenStep(), authorize }, internalErrors);
    const refused = await failing.admit(request(await minter.mint()), READ);
    assert.deepEqual([refused.allowed, refused.reason], [false, 'LOCKSTEP_ERR_INTERNAL']);
    assert.equal(internalErrors.length, 1);

    const denying = pipelineWith({ txnToken: await realTxnTokenStep() }, internalErrors);
    const wouldBe = await denying.admit(request(await minter.mint({ tctx: { roles: ['support'] } })), READ);
    assert.deepEqual([wouldBe.allowed, wouldBe.dryRun, wouldBe.reason], [true, true, 'LOCKSTEP_ERR_DENIED']);
    assert.equal(internalErrors.length, 1, 'a denial is no internal error');
  });
});
