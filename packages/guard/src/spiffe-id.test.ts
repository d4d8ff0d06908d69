import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isValidTrustDomain, parseSpiffeId } from './spiffe-id.ts';

describe('parseSpiffeId', () => {
  it('parses a workload ID and extracts the service from /svc/<name>', () => {
    const id = parseSpiffeId('spiffe://shop.test/svc/orders');
    assert.deepEqual(id, { id: 'spiffe://shop.test/svc/orders', trustDomain: 'shop.test', path: '/svc/orders', service: 'orders' });
    assert.ok(Object.isFrozen(id));
  });

  it('parses an ID without a path (the trust domain itself) with no service', () => {
    assert.deepEqual(parseSpiffeId('spiffe://shop.test'), { id: 'spiffe://shop.test', trustDomain: 'shop.test', path: '', service: null });
  });

  it('has no service for paths other than exactly /svc/<name>', () => {
    for (const path of ['/svc', '/svc/orders/v2', '/ns/prod/sa/orders', '/SVC/orders', '/x/svc/orders']) {
      const id = parseSpiffeId(`spiffe://shop.test${path}`);
      assert.ok(id !== null, path);
      assert.equal(id.path, path);
      assert.equal(id.service, null, path);
    }
  });

  it('keeps the case of path segments and accepts ".", "_" and "-" inside them', () => {
    assert.equal(parseSpiffeId('spiffe://shop.test/svc/Order-Svc_v1.2')?.service, 'Order-Svc_v1.2');
    assert.equal(parseSpiffeId('spiffe://shop.test/svc/...')?.service, '...');
  });

  it('accepts an ID of exactly 2048 characters and refuses one of 2049', () => {
    const prefix = 'spiffe://shop.test/svc/';
    assert.ok(parseSpiffeId(prefix + 'a'.repeat(2048 - prefix.length)) !== null);
    assert.equal(parseSpiffeId(prefix + 'a'.repeat(2049 - prefix.length)), null);
  });

  const refused: Array<[string, string]> = [
    ['upper-case scheme', 'SPIFFE://shop.test/svc/orders'],
    ['mixed-case scheme', 'Spiffe://shop.test/svc/orders'],
    ['upper-case trust domain', 'spiffe://SHOP.TEST/svc/orders'],
    ['partly upper-case trust domain', 'spiffe://shop.Test/svc/orders'],
    ['percent-encoding in the trust domain', 'spiffe://shop%2etest/svc/orders'],
    ['percent-encoding in the path', 'spiffe://shop.test/svc/ord%65rs'],
    ['percent-encoded slash', 'spiffe://shop.test/svc%2forders'],
    ['userinfo', 'spiffe://admin@shop.test/svc/orders'],
    ['userinfo with password', 'spiffe://admin:secret@shop.test/svc/orders'],
    ['port', 'spiffe://shop.test:8443/svc/orders'],
    ['query', 'spiffe://shop.test/svc/orders?x=1'],
    ['query right after the trust domain', 'spiffe://shop.test?x=1'],
    ['fragment', 'spiffe://shop.test/svc/orders#frag'],
    ['empty segment', 'spiffe://shop.test/svc//orders'],
    ['leading empty segment', 'spiffe://shop.test//svc/orders'],
    ['"." segment', 'spiffe://shop.test/svc/./orders'],
    ['".." segment', 'spiffe://shop.test/svc/../admin'],
    ['".." as the service', 'spiffe://shop.test/svc/..'],
    ['trailing slash', 'spiffe://shop.test/svc/orders/'],
    ['trailing slash after the trust domain', 'spiffe://shop.test/'],
    ['empty trust domain', 'spiffe:///svc/orders'],
    ['trust domain with a space', 'spiffe://shop test/svc/orders'],
    ['trust domain with "*"', 'spiffe://*.shop.test/svc/orders'],
    ['trust domain with "+"', 'spiffe://shop+test/svc/orders'],
    ['trust domain with non-ASCII', 'spiffe://shöp.test/svc/orders'],
    ['trust domain of 256 characters', `spiffe://${'a'.repeat(256)}/svc/orders`],
    ['path with a space', 'spiffe://shop.test/svc/my orders'],
    ['path with a NUL', 'spiffe://shop.test/svc/orders\u0000'],
    ['backslash in the path', 'spiffe://shop.test/svc\\orders'],
    ['https scheme', 'https://shop.test/svc/orders'],
    ['spiffe: without //', 'spiffe:shop.test/svc/orders'],
    ['leading whitespace', ' spiffe://shop.test/svc/orders'],
    ['trailing whitespace', 'spiffe://shop.test/svc/orders '],
    ['empty string', ''],
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
  it('accepts lower-case names of letters, digits, ".", "-" and "_"', () => {
    for (const name of ['shop.test', 'example.org', 'a', 'prod_eu-1.shop.test', 'a'.repeat(255)]) {
      assert.equal(isValidTrustDomain(name), true, name);
    }
  });

  it('refuses upper case, schemes, ports, paths, leading or trailing dots, empty and over-long names', () => {
    for (const name of ['', 'Shop.test', 'spiffe://shop.test', 'shop.test:443', 'shop.test/x', '.shop.test', 'shop.test.', 'shop test', 'shop%2etest', 'a'.repeat(256)]) {
      assert.equal(isValidTrustDomain(name), false, name);
    }
  });
});
