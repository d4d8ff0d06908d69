import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { outboundTraceparent, traceIdOf } from './trace-context.ts';

const TRACE = '0af7651916cd43dd8448eb211c80319c';
const PARENT = 'b7ad6b7169203331';

describe('traceIdOf', () => {
  it('reads the trace id of a valid version-00 traceparent', () => {
    assert.equal(traceIdOf(`00-${TRACE}-${PARENT}-01`), TRACE);
    assert.equal(traceIdOf(`00-${TRACE}-${PARENT}-00`), TRACE);
  });

  it('refuses malformed, upper-case, other-version and all-zero traceparents', () => {
    for (const bad of [
      undefined,
      '',
      `01-${TRACE}-${PARENT}-01`,
      `00-${TRACE.toUpperCase()}-${PARENT}-01`,
      `00-${TRACE}-${PARENT}-01 `,
      `00-${TRACE}-${PARENT}-1`,
      `00-${TRACE}x-${PARENT}-01`,
      `00-${'0'.repeat(32)}-${PARENT}-01`,
      `00-${TRACE}-${'0'.repeat(16)}-01`,
      `00-${TRACE}-${PARENT}-01\n`,
      `00_${TRACE}-${PARENT}-01`,
    ])
      assert.equal(traceIdOf(bad), null, JSON.stringify(bad));
  });
});

describe('outboundTraceparent', () => {
  it('continues the inbound trace with a new parent id, or starts a new trace', () => {
    const child = outboundTraceparent(`00-${TRACE}-${PARENT}-01`);
    assert.equal(traceIdOf(child), TRACE);
    assert.notEqual(child.slice(36, 52), PARENT);
    const fresh = outboundTraceparent(null);
    assert.match(fresh, /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
  });
});
