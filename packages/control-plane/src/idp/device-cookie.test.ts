import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { describe, it } from 'node:test';
import { createDeviceCookies, DEVICE_COOKIE } from './device-cookie.ts';

const OLD = 'o'.repeat(32);
const NEW = 'n'.repeat(32);
const carrying = (setCookie: string) =>
  ({ headers: { cookie: `other=1; ${setCookie.split(';', 1)[0]}` } }) as unknown as IncomingMessage;

describe('device cookie', () => {
  it('marks a browser as known for the account it signed in to, and for no other', () => {
    const cookies = createDeviceCookies([NEW]);
    const setCookie = cookies.issue('alice', null);
    assert.match(
      setCookie,
      new RegExp(
        `^${DEVICE_COOKIE}=[\\w-]+\\.[\\w-]+\\.[\\w-]+; Path=/oidc/interaction; Max-Age=\\d+; HttpOnly; Secure; SameSite=Lax$`,
      ),
    );
    const browser = cookies.knownBrowser(carrying(setCookie), 'alice');
    assert.match(String(browser), /^[\w-]{16}$/);
    assert.equal(cookies.knownBrowser(carrying(setCookie), 'bob'), null);
    assert.equal(
      cookies.issue('alice', browser).split('.')[0],
      setCookie.split('.')[0],
      'a sign-in keeps the browser id',
    );
    assert.equal(cookies.knownBrowser({ headers: {} } as IncomingMessage, 'alice'), null);
  });

  it('refuses a forged or altered cookie, and verifies with a previous secret after a rotation', () => {
    const setCookie = createDeviceCookies([OLD]).issue('alice', 'browser-id-1');
    const [browser, name, signature] = (setCookie.split(';', 1)[0] as string)
      .slice(DEVICE_COOKIE.length + 1)
      .split('.');
    const forged = `${DEVICE_COOKIE}=${browser}.${Buffer.from('bob').toString('base64url')}.${signature}`;
    assert.equal(createDeviceCookies([OLD]).knownBrowser(carrying(forged), 'bob'), null, 'another name');
    assert.equal(
      createDeviceCookies([OLD]).knownBrowser(carrying(`${DEVICE_COOKIE}=other-id.${name}.${signature}`), 'alice'),
      null,
      'another browser id',
    );
    assert.equal(createDeviceCookies([NEW]).knownBrowser(carrying(setCookie), 'alice'), null, 'another secret');
    assert.equal(createDeviceCookies([NEW, OLD]).knownBrowser(carrying(setCookie), 'alice'), 'browser-id-1');
  });
});
