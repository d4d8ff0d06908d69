/**
 * Where the guard's own test suite (packages/guard/test) makes each scanner attack against the guard
 * over real mTLS — with proof that the handler never ran, which the scanner cannot see from outside.
 * guard-coverage.test.ts checks that the keys are exactly the catalogue's ids and that every named
 * test exists, so a new attack without a guard test, or a guard test renamed away, fails the build.
 * The guard cannot import the scanner (the scanner depends on the guard): the check lives here.
 */
export type GuardTest =
  /** A test of `file` (in packages/guard/test/) titled `test`: a literal title, or one row of a table-driven test. */
  | { readonly file: string; readonly test: string }
  /** The test that `file` declares for @lockstep/testkit's Txn-Token attack `testkit` (`<id>: <description>`). */
  | { readonly file: string; readonly testkit: string };

const attacks = (test: string): GuardTest => ({ file: 'attacks.test.ts', test });
const testkit = (...ids: string[]): GuardTest[] => ids.map((id) => ({ file: 'attacks.test.ts', testkit: id }));
const svidRule = (what: string, code = 'LOCKSTEP_ERR_PEER_ID_INVALID'): GuardTest => ({
  file: 'svid-rules.test.ts',
  test: `refuses ${what}: 401 ${code}, audited, handler not run`,
});
/** every-answer.test.ts: one method against every path (declared or not), as a caller without a certificate. */
const withoutCertificate = (method: string): GuardTest => ({
  file: 'every-answer.test.ts',
  test: `${method} × every path, with and without a body — no certificate`,
});
const scannerAttacks = (test: string): GuardTest => ({ file: 'scanner-attacks.test.ts', test });
const strictBody = (label: string): GuardTest => attacks(`strict body: ${label}`);
const pathTrick = (path: string): GuardTest => attacks(`path trick never reaches an unauthorized action: ${path}`);
const revocation: GuardTest = {
  file: 'behaviour.test.ts',
  test: 'revocation of a sub, a txn or a SPIFFE ID applies to cached tokens at once',
};

export const guardCoverage: Readonly<Record<string, readonly GuardTest[]>> = {
  'transport.no-client-cert': [attacks('no client certificate')],
  'transport.foreign-ca': [attacks('certificate from a foreign CA')],
  'transport.expired-cert': [attacks('expired certificate')],
  'transport.not-yet-valid-cert': [attacks('not-yet-valid certificate')],
  'transport.two-uri-sans': [attacks('two URI SANs'), svidRule('two URI SANs')],
  'transport.no-uri-san': [attacks('no URI SAN (DNS name only)')],
  'transport.lookalike-trust-domain': [
    attacks('lookalike trust domain with a suffix: spiffe://shop.test.evil/svc/gateway'),
    attacks('lookalike trust domain with a prefix: spiffe://evilshop.test/svc/gateway'),
  ],
  'transport.trust-domain-encoding': [
    attacks('malformed or encoded SPIFFE ID: spiffe://shop%2etest/svc/gateway'),
    attacks('malformed or encoded SPIFFE ID: spiffe://SHOP.TEST/svc/gateway'),
  ],
  'transport.svid-key-usage': [
    svidRule('a leaf with keyCertSign'),
    svidRule('a leaf with cRLSign'),
    svidRule('no key usage extension'),
    svidRule('a non-critical key usage'),
  ],
  'transport.svid-no-path': [svidRule('a SPIFFE ID with no path (spiffe://shop.test)')],
  'transport.svid-lifetime': [svidRule('a 10-year lifetime')],
  'transport.plaintext': [attacks('plain HTTP to the TLS port gets no HTTP answer and is audited')],
  'transport.framework-auto-answer': [
    ...['OPTIONS', 'HEAD', 'TRACE', 'PROPFIND', 'GET'].map(withoutCertificate),
    { file: 'every-answer.test.ts', test: "raw socket: an unknown method → 400, in the guard's words and audited" },
    {
      file: 'adapter-edges.test.ts',
      test: 'Express: middleware mounted before the guard is reported loudly, once; the guard still decides',
    },
  ],

  'txn.missing': testkit('header-absent'),
  'txn.duplicate-header': testkit('header-repeated'),
  'txn.alg-none': testkit('alg-none', 'alg-none-title-case', 'alg-none-upper-case', 'alg-none-mixed-case'),
  'txn.signature-stripped': testkit('signature-stripped'),
  'txn.hs256-key-confusion': testkit('hs256-public-key-pem', 'hs256-public-key-der'),
  'txn.ecdsa-zero-signature': testkit('ecdsa-zero-signature'),
  'txn.payload-tampered': testkit('payload-tampered'),
  'txn.embedded-jwk': testkit('embedded-jwk'),
  'txn.jku-x5u': testkit('jku-header', 'x5u-header'),
  'txn.kid-traversal': testkit('kid-path-traversal'),
  'txn.kid-unknown': testkit('kid-unknown'),
  'txn.crit-unknown': testkit('crit-unknown'),
  'txn.b64-false': testkit('crit-b64-false'),
  'txn.jwe': testkit('jwe-shaped'),
  'txn.expired': testkit('expired'),
  'txn.not-yet-valid': testkit('nbf-future', 'iat-future'),
  'txn.no-exp': testkit('exp-missing'),
  'txn.lifetime-over-max': testkit('lifetime-over-max'),
  'txn.wrong-audience': testkit('aud-other-trust-domain', 'aud-array'),
  'txn.wrong-type': testkit('typ-jwt', 'typ-missing'),
  'txn.user-token': [
    ...testkit('typ-at-jwt'),
    scannerAttacks("txn.user-token: a user's access token and ID token, signed by a trusted key, as the Txn-Token"),
  ],
  'txn.foreign-trust-domain': [
    scannerAttacks("txn.foreign-trust-domain: a token of another trust domain's token service, key unknown"),
    scannerAttacks("txn.foreign-trust-domain: another trust domain's token, key trusted here: refused by aud"),
  ],
  'txn.duplicate-claims': testkit('duplicate-claim-key'),
  'txn.nul-claims': testkit('claim-nul-byte'),
  'txn.oversized': testkit('oversized'),
  'txn.revoked-sub': [revocation],
  'txn.revoked-txn': [revocation],
  'txn.no-txn': testkit('txn-missing'),
  'txn.no-scope': testkit('scope-missing'),
  'txn.no-req-wl': testkit('req-wl-missing'),
  'txn.claim-wrong-type': testkit('roles-string', 'roles-non-string', 'tenant-number'),
  'txn.tctx-proto-key': testkit('tctx-proto-key', 'claims-proto-key'),

  'authz.unlisted-caller': [attacks('lateral movement: a valid SVID of a service the policy does not allow')],
  'authz.path-tricks': ['/admin/stats/', '/ADMIN/stats', '/orders/%2e%2e/admin/stats', '//admin/stats'].map(pathTrick),
  'authz.bola': [
    {
      file: 'object-level.test.ts',
      test: "lets alice read her order and refuses bob's with one token, each decision audited with the owner rule",
    },
  ],
  'authz.missing-role': [attacks('allowed service, but the user lacks the required role')],
  'authz.function-level': [
    attacks('method switching: GET allowed, DELETE denied for a customer; allowed for an admin'),
  ],

  'input.schema-bypass': [attacks('unknown field where the schema forbids it'), attacks('body failing the schema')],
  'input.prototype-pollution': [
    attacks('prototype pollution attempt'),
    strictBody('__proto__ inside a nested object'),
    strictBody('constructor.prototype inside a nested object'),
  ],
  'input.duplicate-keys': [
    strictBody('duplicate key: the last one would win'),
    strictBody('duplicate key, spelled with an escape'),
    strictBody('duplicate key inside a nested object'),
  ],
  'input.nul-in-body': [strictBody('escaped NUL in a string'), strictBody('escaped escape character in a key')],
  'input.oversized-body': [attacks('oversized body')],
  'input.wrong-content-type': [attacks('wrong content type')],
  'input.oversized-headers': [attacks('oversized headers')],
};
