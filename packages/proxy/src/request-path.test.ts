import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ambiguousPath } from './request-path.ts';

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
    ];
    for (const target of plain) assert.equal(ambiguousPath(target), null, target);
  });
});
