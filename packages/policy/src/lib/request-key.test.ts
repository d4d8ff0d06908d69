import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { RequestContext } from '../request-context.ts';
import { canonicalValue, requestKey } from './request-key.ts';

const context: RequestContext = { sub: 'alice', roles: ['b', 'a'], scope: [], requester: '', callerService: 'gateway' };
const request = { principal: 'spiffe://shop.test/svc/gateway', action: 'orders:read', resource: 'orders', context };
const contextPart = (key: string) => key.slice(key.indexOf('|{') + 1);

describe('requestKey', () => {
  it('starts with the policy version and quotes every string', () => {
    assert.equal(
      requestKey('v1', request),
      'v1|"spiffe://shop.test/svc/gateway"|"orders:read"|"orders"|{"callerService":"gateway","requester":"","roles":["a","b"],"scope":[],"sub":"alice"}',
    );
  });

  it('cannot be forged by separators inside values', () => {
    const a = requestKey('v', { ...request, principal: 'x"|"y', action: 'z' });
    const b = requestKey('v', { ...request, principal: 'x', action: 'y"|"z' });
    assert.notEqual(a, b);
  });

  it('treats an undefined tenant as absent and a present one as different', () => {
    assert.equal(
      requestKey('v', { ...request, context: { ...context, tenant: undefined } as never }),
      requestKey('v', request),
    );
    assert.notEqual(requestKey('v', { ...request, context: { ...context, tenant: 't' } }), requestKey('v', request));
  });

  it('produces on the fast path exactly what the general canonical form produces', () => {
    const contexts: RequestContext[] = [
      context,
      { ...context, tenant: 'acme', roles: ['a"', 'a#', 'a\\', 'é', 'a', 'a'], scope: ['z', 'y'] },
      { sub: '', roles: [], scope: [], requester: 'r', callerService: '' },
    ];
    for (const c of contexts) assert.equal(contextPart(requestKey('v', { ...request, context: c })), canonicalValue(c));
  });

  it('falls back to the general form for other shapes, still order-insensitive', () => {
    const odd = { ...context, extra: { b: [2, 1], a: true } } as never;
    const same = { extra: { a: true, b: [1, 2, 2] }, ...context } as never;
    assert.equal(requestKey('v', { ...request, context: odd }), requestKey('v', { ...request, context: same }));
    assert.notEqual(requestKey('v', { ...request, context: odd }), requestKey('v', request));
  });
});
