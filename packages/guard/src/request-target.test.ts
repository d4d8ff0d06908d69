import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ambiguousPath } from './request-target.ts';

describe('ambiguousPath', () => {
  it('refuses every spelling an upstream could normalise into another path', () => {
    const refused = [
      '/public/../admin/users',
      '/public/..',
      '/public/./x',
      '/public/%2e%2e/admin/users',
      '/public/%2E%2e/admin',
      '/public/.%2E/admin',
      '/public/%2e/admin',
      '/public/..;/admin/users',
      '/public/..;x=1/admin',
      '/public/..%2Fadmin%2Fusers',
      '/orders/..%2fadmin',
      '/public/..%5Cadmin',
      '/public/x%5cy',
      '/public\\..\\admin',
      '//admin/users',
      '/public//admin',
      'http://orders/admin/users',
      '*',
      // Path parameters, double encoding, NUL, an encoded ';', overlong UTF-8 (the second review's finds).
      '/admin;x/users',
      '/public/%2e%2e;x/admin/users',
      '/public/%252e%252e/admin',
      '/public/%252e%252e%252fadmin',
      '/public/..%00',
      '/public/a%00b',
      '/public/..%3b/admin',
      '/public/%c0%ae%c0%ae/admin',
      '/public/100%',
      // A fragment where none belongs: routers stop at '#', Go's net/http keeps it (the third review's finds).
      '/docs/home#/edit',
      '/docs/home?x=1#/edit',
      '/docs/home%23/edit',
      '/docs/home%3F/edit',
    ];
    for (const target of refused) assert.notEqual(ambiguousPath(target), null, target);
  });

  it('lets plain paths through, dots inside names and anything in the query included', () => {
    const plain = [
      '/',
      '/orders/42',
      '/orders/42?full=1',
      '/files/report.v2.pdf',
      '/files/...',
      '/files/..x',
      '/files/%2e%2ex',
      '/search?q=../..%2F..//x\\y',
      '/orders/a%20b',
      '/orders/caf%C3%A9',
    ];
    for (const target of plain) assert.equal(ambiguousPath(target), null, target);
  });
});
