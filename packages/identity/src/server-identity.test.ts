import assert from 'node:assert/strict';
import type { PeerCertificate } from 'node:tls';
import { before, describe, it } from 'node:test';
import { serverSvidCheck } from './server-identity.ts';
import { createSigner, issueLeaf, type TestSigner } from './test-support.ts';

const CONTROL_PLANE = 'spiffe://shop.test/lockstep/control-plane';
let signer: TestSigner;
before(async () => {
  signer = await createSigner();
});

/** What checkServerIdentity is given: Node's PeerCertificate, of which the check reads only `raw`. */
async function presented(uris: string[], options: { ca?: boolean } = {}): Promise<PeerCertificate> {
  const leaf = await issueLeaf(signer, { uris, ...options });
  return { raw: Buffer.from(leaf.der) } as PeerCertificate;
}

describe('serverSvidCheck', () => {
  it('accepts exactly the expected SPIFFE ID, read from the DER', async () => {
    const check = serverSvidCheck(CONTROL_PLANE);
    assert.equal(check('127.0.0.1', await presented([CONTROL_PLANE])), undefined);
  });

  it('refuses another ID, another trust domain, a non-SVID and a CA — returning an Error, never throwing', async () => {
    const check = serverSvidCheck(CONTROL_PLANE, { hint: 'check the URL' });
    const cases: [PeerCertificate, RegExp][] = [
      [
        await presented(['spiffe://shop.test/svc/orders']),
        /presented spiffe:\/\/shop\.test\/svc\/orders, not .*: check the URL$/,
      ],
      [await presented(['spiffe://evil.test/lockstep/control-plane']), /SVID_FOREIGN_TRUST_DOMAIN/],
      [await presented([CONTROL_PLANE, 'spiffe://shop.test/svc/orders']), /SVID_URI_SAN/],
      [await presented([CONTROL_PLANE], { ca: true }), /SVID_CA/],
      [{ raw: Buffer.from('not a certificate') } as PeerCertificate, /SVID_UNPARSABLE/],
    ];
    for (const [cert, reason] of cases) {
      const refusal = check('127.0.0.1', cert);
      assert.ok(refusal instanceof Error, `refused: ${reason}`);
      assert.match(refusal.message, reason);
    }
  });

  it('refuses to be built for something that is not a SPIFFE ID', () => {
    assert.throws(() => serverSvidCheck('https://control-plane'), TypeError);
  });
});
