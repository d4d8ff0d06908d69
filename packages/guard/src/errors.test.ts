import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import {
  GuardConfigError,
  GuardError,
  errorBody,
  errorCatalogue,
  errorCodes,
  refusalBytes,
  renderRefusal,
  statusOf,
  type GuardErrorCode,
} from './errors.ts';

// Written out so that adding a code without deciding its status fails to typecheck here.
const expectedStatus: Record<GuardErrorCode, number> = {
  LOCKSTEP_ERR_PEER_CERT_MISSING: 401,
  LOCKSTEP_ERR_PEER_UNTRUSTED: 401,
  LOCKSTEP_ERR_PEER_ID_INVALID: 401,
  LOCKSTEP_ERR_PEER_FOREIGN_TRUST_DOMAIN: 401,
  LOCKSTEP_ERR_TLS_HANDSHAKE: 400,
  LOCKSTEP_ERR_PEER_REVOKED: 401,
  LOCKSTEP_ERR_TXN_TOKEN_MISSING: 401,
  LOCKSTEP_ERR_TXN_TOKEN_DUPLICATE: 401,
  LOCKSTEP_ERR_TXN_TOKEN_MALFORMED: 401,
  LOCKSTEP_ERR_TXN_TOKEN_INVALID: 401,
  LOCKSTEP_ERR_TXN_TOKEN_EXPIRED: 401,
  LOCKSTEP_ERR_TXN_TOKEN_CLAIMS: 401,
  LOCKSTEP_ERR_TXN_TOKEN_REVOKED: 401,
  LOCKSTEP_ERR_DENIED: 403,
  LOCKSTEP_ERR_ROUTE_UNKNOWN: 404,
  LOCKSTEP_ERR_INPUT_INVALID: 400,
  LOCKSTEP_ERR_BODY_TOO_LARGE: 413,
  LOCKSTEP_ERR_UNSUPPORTED_MEDIA_TYPE: 415,
  LOCKSTEP_ERR_HEADERS_TOO_LARGE: 431,
  LOCKSTEP_ERR_PROBE_INVALID: 400,
  LOCKSTEP_ERR_NO_POLICY: 503,
  LOCKSTEP_ERR_UPSTREAM_UNAVAILABLE: 502,
  LOCKSTEP_ERR_UPSTREAM_TIMEOUT: 504,
  LOCKSTEP_ERR_INTERNAL: 500,
};

describe('error catalogue', () => {
  it('maps every code to its HTTP status and a summary', () => {
    assert.deepEqual([...errorCodes].sort(), Object.keys(expectedStatus).sort());
    for (const code of errorCodes) {
      assert.match(code, /^LOCKSTEP_ERR_[A-Z_]+$/);
      assert.equal(statusOf(code), expectedStatus[code], code);
      assert.ok(errorCatalogue[code].summary.length > 10, code);
    }
  });

  it('is documented in the guard README: every code in its error table, and no code that does not exist', () => {
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
    const tableRows = readme.split('\n').filter((line) => line.trimStart().startsWith('|'));
    const documented = new Set(tableRows.join('\n').match(/LOCKSTEP_ERR_[A-Z_]+/g) ?? []);
    const undocumented = errorCodes.filter((code) => !documented.has(code));
    const unknown = [...documented].filter((code) => !(code in errorCatalogue));
    assert.deepEqual(undocumented, [], 'codes missing from the README error table');
    assert.deepEqual(unknown, [], 'codes in the README that do not exist');
  });
});

describe('GuardError', () => {
  it('carries the code, its status and by default the catalogue summary as detail', () => {
    const error = new GuardError('LOCKSTEP_ERR_DENIED');
    assert.ok(error instanceof Error);
    assert.equal(error.name, 'GuardError');
    assert.equal(error.code, 'LOCKSTEP_ERR_DENIED');
    assert.equal(error.status, 403);
    assert.equal(error.detail, errorCatalogue.LOCKSTEP_ERR_DENIED.summary);
    assert.equal(error.message, `LOCKSTEP_ERR_DENIED: ${errorCatalogue.LOCKSTEP_ERR_DENIED.summary}`);
    assert.deepEqual(error.policyIds, []);
  });

  it('keeps an explicit detail and the deciding policies', () => {
    const error = new GuardError('LOCKSTEP_ERR_DENIED', 'forbidden by policy', ['forbid-suspended']);
    assert.equal(error.detail, 'forbidden by policy');
    assert.deepEqual(error.policyIds, ['forbid-suspended']);
  });
});

describe('errorBody', () => {
  it('holds only the code and the request id, as valid JSON even for an odd request id', () => {
    const requestId = 'id "with" quotes\\ and\nnewline';
    const body = errorBody('LOCKSTEP_ERR_TXN_TOKEN_INVALID', requestId);
    assert.deepEqual(JSON.parse(body), { error: 'LOCKSTEP_ERR_TXN_TOKEN_INVALID', requestId });
  });
});

describe('renderRefusal', () => {
  it('is the whole answer: the catalogue status, the code and request id in headers and body, no caching', () => {
    for (const code of errorCodes) {
      const refusal = renderRefusal(code, 'r-1');
      assert.equal(refusal.status, statusOf(code));
      assert.equal(refusal.body, errorBody(code, 'r-1'));
      assert.deepEqual(refusal.headers, {
        'content-type': 'application/json; charset=utf-8',
        'content-length': String(Buffer.byteLength(refusal.body)),
        'cache-control': 'no-store',
        'lockstep-error': code,
        'lockstep-request-id': 'r-1',
      });
    }
  });

  it('has no body for HEAD (the length stays that of the body) and closes when asked', () => {
    const refusal = renderRefusal('LOCKSTEP_ERR_DENIED', 'r-2', { head: true, close: true });
    assert.equal(refusal.body, '');
    assert.equal(refusal.headers['content-length'], String(Buffer.byteLength(errorBody('LOCKSTEP_ERR_DENIED', 'r-2'))));
    assert.equal(refusal.headers.connection, 'close');
  });

  it('renders as an HTTP/1.1 response for the raw-socket paths', () => {
    const text = refusalBytes(renderRefusal('LOCKSTEP_ERR_HEADERS_TOO_LARGE', 'r-3', { close: true }));
    assert.match(text, /^HTTP\/1\.1 431 Request Header Fields Too Large\r\n/);
    assert.match(text, /\r\nlockstep-error: LOCKSTEP_ERR_HEADERS_TOO_LARGE\r\n/);
    assert.match(text, /\r\nconnection: close\r\n\r\n\{"error":"LOCKSTEP_ERR_HEADERS_TOO_LARGE","requestId":"r-3"\}$/);
  });
});

describe('GuardConfigError', () => {
  it('is a TypeError with code LOCKSTEP_CONFIG_INVALID', () => {
    const error = new GuardConfigError('service must be a name');
    assert.ok(error instanceof TypeError);
    assert.equal(error.code, 'LOCKSTEP_CONFIG_INVALID');
    assert.equal(error.name, 'GuardConfigError');
    assert.equal(error.message, 'service must be a name');
  });
});
