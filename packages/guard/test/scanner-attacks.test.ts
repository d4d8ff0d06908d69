/**
 * Scanner attacks that no other guard test makes in the scanner's shape, over real mTLS on every
 * adapter (packages/scanner/test/guard-coverage.ts maps every scanner attack id to the guard tests
 * that make it, and checks that they exist). Each refusal is proven by the fixture's expectRefused:
 * the catalogue's status and code, the audit event, no handler call and no change of state.
 */
import { after, before, describe, test } from 'node:test';
import { createTxnTokenMinter, type MtlsClient, type TxnTokenMinter } from '@lockstep/testkit';
import type { GuardErrorCode } from '../src/index.ts';
import {
  adapters,
  expectRefused,
  guardFor,
  recordDecisions,
  startOrders,
  TRUST_DOMAIN,
  type RunningService,
  type World,
  world,
} from './fixture.ts';

const OTHER_TRUST_DOMAIN = 'other.test';

for (const adapter of adapters) {
  describe(`${adapter} adapter: the scanner's attacks`, () => {
    let w: World;
    let service: RunningService;
    let gateway: MtlsClient;
    /** Another trust domain's token service, whose key this guard does not know. */
    let stranger: TxnTokenMinter;
    /** Another trust domain's token service whose key this guard trusts too (federated, or a leaked JWKS). */
    let neighbour: TxnTokenMinter;
    const decisions = recordDecisions();

    before(async () => {
      w = await world();
      stranger = await createTxnTokenMinter({ trustDomain: OTHER_TRUST_DOMAIN });
      neighbour = await createTxnTokenMinter({ trustDomain: OTHER_TRUST_DOMAIN });
      const keys = [...w.minter.jwks.keys, ...neighbour.jwks.keys];
      service = await startOrders(adapter, await guardFor(w, { txnTokenKeys: { jwks: { keys } } }));
      gateway = w.client(w.svids.gateway);
    });
    after(async () => {
      decisions.stop();
      await gateway.close();
      await service.close();
      await service.guard.close();
    });

    /** GET /orders/7 as the gateway (a permitted caller) with `token`, which must be refused. */
    async function refusedToken(token: string, code: GuardErrorCode): Promise<void> {
      const send = () => gateway.request(`${service.url}/orders/7`, { headers: { 'txn-token': token } });
      await expectRefused(service, decisions, send, 401, code);
    }

    test("txn.foreign-trust-domain: a token of another trust domain's token service, key unknown", async () => {
      // Its own audience and requester, as that token service would issue it.
      await refusedToken(await stranger.mint(), 'LOCKSTEP_ERR_TXN_TOKEN_INVALID');
      // The same, but under the kid of this trust domain's key: the signature does not verify.
      await refusedToken(await stranger.mint({}, { header: { kid: w.minter.kid } }), 'LOCKSTEP_ERR_TXN_TOKEN_INVALID');
    });

    test("txn.foreign-trust-domain: another trust domain's token, key trusted here: refused by aud", async () => {
      await refusedToken(await neighbour.mint(), 'LOCKSTEP_ERR_TXN_TOKEN_CLAIMS');
      // Even when it names this trust domain's gateway as requester, the audience is not ours.
      const requester = `spiffe://${TRUST_DOMAIN}/svc/gateway`;
      await refusedToken(await neighbour.mint({ req_wl: requester }), 'LOCKSTEP_ERR_TXN_TOKEN_CLAIMS');
    });

    test("txn.user-token: a user's access token and ID token, signed by a trusted key, as the Txn-Token", async () => {
      const accessToken = await w.minter.mint(
        { client_id: 'gateway', scope: 'openid orders:read' },
        { header: { typ: 'at+jwt' } },
      );
      await refusedToken(accessToken, 'LOCKSTEP_ERR_TXN_TOKEN_CLAIMS');
      const idToken = await w.minter.mint(
        { aud: 'gateway', azp: 'gateway', nonce: 'n-0S6_WzA2Mj' },
        { header: { typ: 'JWT' } },
      );
      await refusedToken(idToken, 'LOCKSTEP_ERR_TXN_TOKEN_CLAIMS');
    });
  });
}
