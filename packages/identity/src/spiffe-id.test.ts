import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  formatSpiffeId,
  isValidTrustDomain,
  parseSpiffeId,
  trustDomainId,
  workloadId,
  type SpiffeKind,
} from './spiffe-id.ts';

/**
 * The vectors of the reference implementation: go-spiffe v2, `spiffeid/id_test.go` (TestFromString,
 * TestFromSegments) and `spiffeid/trustdomain_test.go` (TestTrustDomainFromString), read for this
 * table and written again here. Every byte 0–255 is tried as a trust-domain and as a path character.
 *
 * Deliberate differences from go-spiffe, each tested below:
 * - IDs over 2048 characters and trust domains over 255 are refused (go-spiffe has no bound). The
 *   SPIFFE-ID standard (§2.3) asks implementations to handle 2048 bytes and never to generate more,
 *   and bounds the host at 255; a parser on the authentication path should bound its input.
 * - `isValidTrustDomain` (what Lockstep accepts in its own configuration and formats into IDs) also
 *   refuses a leading or trailing dot, where go-spiffe's TrustDomainFromString accepts
 *   "trustdomain." — and it takes a bare name only, never `spiffe://<td>`. Parsing a presented ID
 *   stays with the standard: `spiffe://trustdomain./path` parses (and, compared exactly, never
 *   equals a configured trust domain).
 * - The formatter takes one path segment (the `<name>` of `/<kind>/<name>`), like FromSegments
 *   with Lockstep's kind in front; a segment that contains "/" is refused, as there.
 */
const TD_CHARS = new Set('abcdefghijklmnopqrstuvwxyz0123456789.-_');
const PATH_CHARS = new Set('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_');
const byte = (code: number) => String.fromCharCode(code);
const hex = (code: number) => code.toString(16).toUpperCase().padStart(2, '0');

describe('parseSpiffeId: go-spiffe vectors', () => {
  it('refuses the empty string and accepts an ID without a path', () => {
    assert.equal(parseSpiffeId(''), null);
    assert.deepEqual(parseSpiffeId('spiffe://trustdomain'), {
      id: 'spiffe://trustdomain',
      trustDomain: 'trustdomain',
      path: '',
      kind: null,
      name: null,
      service: null,
    });
  });

  it('accepts exactly lower-case letters, digits, ".", "-" and "_" in the trust domain (every byte 0–255)', () => {
    for (let code = 0; code < 256; code += 1) {
      if (byte(code) === '/') continue;
      const id = `spiffe://trustdomain${byte(code)}/path`;
      const parsed = parseSpiffeId(id);
      const what = `0x${hex(code)} is ${TD_CHARS.has(byte(code)) ? '' : 'not '}a trust-domain character`;
      assert.equal(parsed?.trustDomain ?? null, TD_CHARS.has(byte(code)) ? `trustdomain${byte(code)}` : null, what);
    }
  });

  it('accepts exactly letters, digits, ".", "-" and "_" in the path (every byte 0–255)', () => {
    for (let code = 0; code < 256; code += 1) {
      if (byte(code) === '/') continue;
      const parsed = parseSpiffeId(`spiffe://trustdomain/path${byte(code)}`);
      const what = `0x${hex(code)} is ${PATH_CHARS.has(byte(code)) ? '' : 'not '}a path character`;
      assert.equal(parsed?.path ?? null, PATH_CHARS.has(byte(code)) ? `/path${byte(code)}` : null, what);
    }
  });

  const refused: Array<[string, string]> = [
    ['bad scheme', 's'],
    ['bad scheme', 'spiffe:/'],
    ['bad scheme', 'Spiffe://'],
    ['missing trust domain', 'spiffe://'],
    ['missing trust domain', 'spiffe:///'],
    ['trailing slash', 'spiffe://trustdomain/'],
    ['empty segment', 'spiffe://trustdomain//'],
    ['empty segment', 'spiffe://trustdomain//path'],
    ['trailing slash', 'spiffe://trustdomain/path/'],
    ['dot segment', 'spiffe://trustdomain/.'],
    ['dot segment', 'spiffe://trustdomain/./path'],
    ['dot segment', 'spiffe://trustdomain/path/./other'],
    ['dot segment', 'spiffe://trustdomain/path/..'],
    ['dot segment', 'spiffe://trustdomain/..'],
    ['dot segment', 'spiffe://trustdomain/../path'],
    ['dot segment', 'spiffe://trustdomain/path/../other'],
    ['percent-encoded unicode trust domain', 'spiffe://%F0%9F%A4%AF/path'],
    ['percent-encoded unicode path', 'spiffe://trustdomain/%F0%9F%A4%AF'],
    ['percent-encoded ascii trust domain', 'spiffe://%62%61%64/path'],
    ['percent-encoded ascii path', 'spiffe://trustdomain/%62%61%64'],
    // TestTrustDomainFromString "reject bad ids"
    ['bad scheme', 'spiffe:/trustdomain/path'],
    ['missing trust domain', 'spiffe:///path'],
  ];
  for (const [what, value] of refused) {
    it(`refuses ${what}: ${JSON.stringify(value)}`, () => {
      assert.equal(parseSpiffeId(value), null);
    });
  }

  it('accepts segments that contain dots but are not "." or ".."', () => {
    for (const path of ['/.path', '/..path', '/...']) {
      assert.equal(parseSpiffeId(`spiffe://trustdomain${path}`)?.path, path);
    }
  });
});

describe('parseSpiffeId: Lockstep naming', () => {
  it('reads the kind and the name of spiffe://<td>/<kind>/<name>', () => {
    const kinds: SpiffeKind[] = ['svc', 'admin', 'lockstep', 'scanner'];
    for (const kind of kinds) {
      const id = parseSpiffeId(`spiffe://shop.test/${kind}/orders`);
      assert.deepEqual(id, {
        id: `spiffe://shop.test/${kind}/orders`,
        trustDomain: 'shop.test',
        path: `/${kind}/orders`,
        kind,
        name: 'orders',
        service: kind === 'svc' ? 'orders' : null,
      });
      assert.ok(Object.isFrozen(id));
    }
  });

  it('has no kind, name or service for other paths', () => {
    const paths = ['', '/svc', '/svc/orders/v2', '/ns/prod/sa/orders', '/SVC/orders', '/x/svc/orders', '/user/alice'];
    for (const path of paths) {
      const id = parseSpiffeId(`spiffe://shop.test${path}`);
      assert.ok(id !== null, path);
      assert.equal(id.path, path);
      assert.deepEqual([id.kind, id.name, id.service], [null, null, null], path);
    }
  });

  it('keeps the case of path segments', () => {
    assert.equal(parseSpiffeId('spiffe://shop.test/svc/Order-Svc_v1.2')?.service, 'Order-Svc_v1.2');
    assert.equal(parseSpiffeId('spiffe://shop.test/svc/...')?.service, '...');
  });

  it('difference: refuses an ID over 2048 characters and a trust domain over 255', () => {
    const prefix = 'spiffe://shop.test/svc/';
    assert.ok(parseSpiffeId(prefix + 'a'.repeat(2048 - prefix.length)) !== null);
    assert.equal(parseSpiffeId(prefix + 'a'.repeat(2049 - prefix.length)), null);
    assert.ok(parseSpiffeId(`spiffe://${'a'.repeat(255)}/svc/orders`) !== null);
    assert.equal(parseSpiffeId(`spiffe://${'a'.repeat(256)}/svc/orders`), null);
  });

  const refused: Array<[string, string]> = [
    ['upper-case scheme', 'SPIFFE://shop.test/svc/orders'],
    ['upper-case trust domain', 'spiffe://SHOP.TEST/svc/orders'],
    ['partly upper-case trust domain', 'spiffe://shop.Test/svc/orders'],
    ['percent-encoding in the trust domain', 'spiffe://shop%2etest/svc/orders'],
    ['percent-encoded slash', 'spiffe://shop.test/svc%2forders'],
    ['userinfo', 'spiffe://admin@shop.test/svc/orders'],
    ['userinfo with password', 'spiffe://admin:secret@shop.test/svc/orders'],
    ['port', 'spiffe://shop.test:8443/svc/orders'],
    ['empty port', 'spiffe://shop.test:/svc/orders'],
    ['query', 'spiffe://shop.test/svc/orders?x=1'],
    ['query right after the trust domain', 'spiffe://shop.test?x=1'],
    ['fragment', 'spiffe://shop.test/svc/orders#frag'],
    ['"?#" (go-spiffe fragment vector)', 'spiffe://domain.test/path/element?#fragment-1'],
    ['trust domain with "*"', 'spiffe://*.shop.test/svc/orders'],
    ['trust domain with non-ASCII', 'spiffe://shöp.test/svc/orders'],
    ['path with a NUL', 'spiffe://shop.test/svc/orders\u0000'],
    ['backslash in the path', 'spiffe://shop.test/svc\\orders'],
    ['https scheme', 'https://shop.test/svc/orders'],
    ['IP and port without a scheme', '192.168.2.2:6688'],
    ['spiffe: without //', 'spiffe:shop.test/svc/orders'],
    ['leading whitespace', ' spiffe://shop.test/svc/orders'],
    ['trailing whitespace', 'spiffe://shop.test/svc/orders '],
  ];
  for (const [what, value] of refused) {
    it(`refuses ${what}`, () => {
      assert.equal(parseSpiffeId(value), null);
    });
  }

  it('never parses a lookalike to our trust domain', () => {
    assert.equal(parseSpiffeId('spiffe://shop.test.evil/svc/orders')?.trustDomain, 'shop.test.evil');
    assert.equal(parseSpiffeId('spiffe://evil-shop.test/svc/orders')?.trustDomain, 'evil-shop.test');
  });
});

describe('isValidTrustDomain', () => {
  it('accepts the go-spiffe trust-domain characters after "trustdomain" (bytes 0–255), except a trailing dot', () => {
    for (let code = 0; code < 256; code += 1) {
      const name = `trustdomain${byte(code)}`;
      // Difference: go-spiffe accepts "trustdomain."; Lockstep configures DNS-shaped names only.
      assert.equal(isValidTrustDomain(name), TD_CHARS.has(byte(code)) && byte(code) !== '.', `0x${hex(code)}`);
    }
  });

  it('accepts lower-case names of letters, digits, ".", "-" and "_"', () => {
    for (const name of ['shop.test', 'example.org', 'a', 'prod_eu-1.shop.test', 'a'.repeat(255)]) {
      assert.equal(isValidTrustDomain(name), true, name);
    }
  });

  it('refuses upper case, schemes, ports, paths, leading or trailing dots, empty and over-long names', () => {
    const names = [
      '',
      'Shop.test',
      'spiffe://shop.test',
      'shop.test:443',
      'shop.test/x',
      '.shop.test',
      'shop.test.',
      'shop test',
      'shop%2etest',
      'a'.repeat(256),
    ];
    for (const name of names) {
      assert.equal(isValidTrustDomain(name), false, name);
    }
  });
});

describe('formatSpiffeId', () => {
  it('builds spiffe://<td>/<kind>/<name>, which parses back to the same parts', () => {
    for (const kind of ['svc', 'admin', 'lockstep', 'scanner'] as const) {
      const id = formatSpiffeId('shop.test', kind, 'orders');
      assert.equal(id, `spiffe://shop.test/${kind}/orders`);
      assert.deepEqual([parseSpiffeId(id)?.kind, parseSpiffeId(id)?.name], [kind, 'orders']);
    }
    assert.equal(workloadId('shop.test', 'gateway'), 'spiffe://shop.test/svc/gateway');
    assert.equal(trustDomainId('shop.test'), 'spiffe://shop.test');
  });

  it('refuses each bad part with a TypeError that names it (go-spiffe FromSegments vectors for the name)', () => {
    const cases: Array<[string, SpiffeKind, string, RegExp]> = [
      ['Shop.test', 'svc', 'orders', /trust domain must be lower-case .* got "Shop\.test"/],
      ['spiffe://shop.test', 'svc', 'orders', /trust domain .* without a scheme/],
      ['shop.test.', 'svc', 'orders', /trust domain/],
      ['', 'svc', 'orders', /trust domain/],
      ['shop.test', 'user' as SpiffeKind, 'orders', /kind must be one of svc, admin, lockstep, scanner; got "user"/],
      ['shop.test', 'svc', '', /name must be one SPIFFE path segment .* got ""/],
      ['shop.test', 'svc', '/', /name must be one SPIFFE path segment/],
      ['shop.test', 'svc', '/foo', /name must be one SPIFFE path segment/],
      ['shop.test', 'svc', '$', /name must be one SPIFFE path segment/],
      ['shop.test', 'svc', 'a/b', /name must be one SPIFFE path segment/],
      ['shop.test', 'svc', '..', /not "\." or "\.\."/],
      ['shop.test', 'svc', 'a'.repeat(2048), /at most 2048 characters/],
    ];
    for (const [trustDomain, kind, name, message] of cases) {
      const refusal = (error: Error) => error instanceof TypeError && message.test(error.message);
      const label = `${trustDomain} ${kind} ${name.slice(0, 20)}`;
      assert.throws(() => formatSpiffeId(trustDomain, kind, name), refusal, label);
    }
    assert.throws(() => trustDomainId('shop.test/x'), TypeError);
  });
});

// Found missing by the mutation run (docs/mutation.md).
describe('edges', () => {
  const notStrings: unknown[] = [
    undefined,
    null,
    42,
    ['spiffe://shop.test/svc/orders'],
    ['shop.test'],
    { toString: () => 'spiffe://shop.test/svc/orders' },
  ];

  it('answers null / false for a value that is not a string (a JavaScript caller), and never throws', () => {
    for (const value of notStrings) {
      assert.equal(parseSpiffeId(value as string), null, String(value));
      assert.equal(isValidTrustDomain(value as string), false, String(value));
    }
  });

  it('formats no name that is not a string, even one whose text would be a segment', () => {
    for (const name of [42, ['orders'], { toString: () => 'orders' }]) {
      assert.throws(() => formatSpiffeId('shop.test', 'svc', name as string), TypeError, String(name));
    }
  });

  it('formats an ID of exactly 2048 characters, and none longer', () => {
    const prefix = 'spiffe://shop.test/svc/';
    assert.equal(formatSpiffeId('shop.test', 'svc', 'a'.repeat(2048 - prefix.length)).length, 2048);
    assert.throws(() => formatSpiffeId('shop.test', 'svc', 'a'.repeat(2049 - prefix.length)), /at most 2048/);
  });
});
