/**
 * Cold and warm Txn-Token verification, in process. Cold: each of `count` fresh tokens verified
 * once through the guard's own txn-token step (structure and header checks, jose compactVerify,
 * claims checks, cache insert) versus the bare minimum with node:crypto — split the compact JWS,
 * decode the signature, ECDSA P-256 verify over the same signing input. Warm: the same tokens again,
 * answered from the step's cache.
 */
import { createPublicKey, verify, type JsonWebKey } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { JWK } from 'jose';
import { Revocations } from '../../packages/guard/src/revocations.ts';
import { createTxnTokenStep, type TxnTokenStep } from '../../packages/guard/src/steps/txn-token.ts';
import { createStaticKeySource } from '../../packages/guard/src/txn-keys.ts';
import { mintCustomerTokens, TRUST_DOMAIN, type BenchWorld } from './world.ts';

export interface ColdPathReport {
  readonly tokens: number;
  /** Guard step, first sight of each token. */
  readonly guardColdUs: number;
  /** node:crypto ECDSA verify of the same tokens (split + base64url decode + verify). */
  readonly rawCryptoUs: number;
  /** guardColdUs / rawCryptoUs. */
  readonly coldRatio: number;
  /** Guard step, every token already cached. */
  readonly guardWarmUs: number;
  readonly warmOps: number;
}

async function createStep(world: BenchWorld): Promise<TxnTokenStep> {
  return createTxnTokenStep({
    trustDomain: TRUST_DOMAIN,
    keys: await createStaticKeySource(world.minter.jwks),
    revocations: new Revocations(),
    maxLifetimeSeconds: 300,
    clockSkewSeconds: 30,
    maxTokenBytes: 8 * 1024,
    cacheSize: 10_000,
  });
}

/** verify() throws on any token it refuses, so getting through the loop means all of them verified. */
async function timeGuard(step: TxnTokenStep, tokens: readonly string[]): Promise<number> {
  const started = performance.now();
  for (const token of tokens) {
    const verified = step.verify(token, []);
    if (verified instanceof Promise) await verified;
  }
  return performance.now() - started;
}

function timeRaw(tokens: readonly string[], jwk: JWK): number {
  const key = createPublicKey({ key: jwk as JsonWebKey, format: 'jwk' });
  const started = performance.now();
  for (const token of tokens) {
    const lastDot = token.lastIndexOf('.');
    const signingInput = Buffer.from(token.slice(0, lastDot), 'latin1');
    const signature = Buffer.from(token.slice(lastDot + 1), 'base64url');
    if (!verify('sha256', signingInput, { key, dsaEncoding: 'ieee-p1363' }, signature))
      throw new Error('raw crypto: a bench token did not verify');
  }
  return performance.now() - started;
}

export async function measureColdPath(world: BenchWorld, count: number, warmPasses: number): Promise<ColdPathReport> {
  const jwk = world.minter.jwks.keys[0] as JWK;
  // JIT warm-up of both paths on tokens that are not measured.
  const warmupTokens = await mintCustomerTokens(world.minter, 300);
  await timeGuard(await createStep(world), warmupTokens);
  timeRaw(warmupTokens, jwk);

  const tokens = await mintCustomerTokens(world.minter, count);
  const rawMs = timeRaw(tokens, jwk);
  const step = await createStep(world);
  const coldMs = await timeGuard(step, tokens);
  let warmMs = 0;
  for (let pass = 0; pass < warmPasses; pass++) warmMs += await timeGuard(step, tokens);

  const guardColdUs = (coldMs * 1000) / count;
  const rawCryptoUs = (rawMs * 1000) / count;
  return {
    tokens: count,
    guardColdUs,
    rawCryptoUs,
    coldRatio: guardColdUs / rawCryptoUs,
    guardWarmUs: (warmMs * 1000) / (count * warmPasses),
    warmOps: count * warmPasses,
  };
}
