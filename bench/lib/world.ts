/**
 * The bench's world, built like packages/guard/test/fixture.ts: a throw-away CA for shop.test, SVIDs
 * for the `orders` service and its caller `gateway`, a Txn-Token minter, and the example policies
 * signed into a bundle for `orders`.
 */
import { fileURLToPath } from 'node:url';
import { exportJWK, generateKeyPair, type JWK } from 'jose';
import { loadPolicyDir, signBundle, type PolicySet } from '@lockstep/policy';
import { createTestCa, createTxnTokenMinter, type Svid, type TxnTokenMinter } from '@lockstep/testkit';

export const TRUST_DOMAIN = 'shop.test';
export const SERVICE = 'orders';
const POLICY_DIR = fileURLToPath(new URL('../../packages/guard/example/policies/', import.meta.url));

export interface BenchWorld {
  readonly caPem: string;
  readonly orders: Svid;
  readonly gateway: Svid;
  readonly minter: TxnTokenMinter;
  readonly policySet: PolicySet;
  readonly policyJwks: { keys: JWK[] };
  readonly bundle: string;
}

export async function createBenchWorld(): Promise<BenchWorld> {
  const ca = await createTestCa({ trustDomain: TRUST_DOMAIN });
  const [orders, gateway] = await Promise.all([
    ca.issueSvid({ service: SERVICE }),
    ca.issueSvid({ service: 'gateway' }),
  ]);
  const minter = await createTxnTokenMinter({ trustDomain: TRUST_DOMAIN });
  const policySet = await loadPolicyDir(POLICY_DIR);
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
  const kid = 'policy-bench-1';
  const policyJwks = { keys: [{ ...(await exportJWK(publicKey)), kid, alg: 'ES256', use: 'sig' }] };
  const bundle = await signBundle(policySet, { privateKey, kid, service: SERVICE });
  return { caPem: ca.bundlePem, orders, gateway, minter, policySet, policyJwks, bundle };
}

/** `count` distinct valid Txn-Tokens (each its own `sub` and `txn`), role customer, requested by the gateway. */
export async function mintCustomerTokens(minter: TxnTokenMinter, count: number): Promise<string[]> {
  const tokens: string[] = [];
  for (let i = 0; i < count; i++) {
    tokens.push(
      await minter.mint({
        sub: `customer-${i}`,
        tctx: { roles: ['customer'], tenant: 't1' },
        req_wl: `spiffe://${TRUST_DOMAIN}/svc/gateway`,
      }),
    );
  }
  return tokens;
}
