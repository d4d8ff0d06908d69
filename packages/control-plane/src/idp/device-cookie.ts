/**
 * The device cookie (OWASP, "Slow Down Online Guessing Attacks with Device Cookies"): a browser that
 * signed in to an account gets a cookie naming the account and a random browser id, signed with the
 * identity provider's cookie secret. Presented again with the same user name, it marks the attempt
 * as coming from a known browser, which the lockout counts on its own (lockout.ts): attacks from
 * elsewhere on the account or from the same network do not hold its user back. It grants nothing
 * else: the password is still checked, and a stolen cookie buys only that browser's few attempts.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';

export const DEVICE_COOKIE = 'lockstep_device';
// Sent only to the sign-in form; half a year, renewed at each sign-in.
const PATH = '/oidc/interaction';
const MAX_AGE_SECONDS = 183 * 24 * 3600;

export interface DeviceCookies {
  /** The browser id when `req` carries a valid device cookie for `username`, else null. */
  knownBrowser(req: IncomingMessage, username: string): string | null;
  /** The Set-Cookie value after a sign-in as `username` (keeping the browser's id when it had one). */
  issue(username: string, browser: string | null): string;
}

/** `keys`: newest first; the first signs, any verifies (the cookie secret can be rotated). */
export function createDeviceCookies(keys: readonly string[]): DeviceCookies {
  const mac = (key: string, browser: string, username: string) =>
    createHmac('sha256', key).update(`lockstep-device:${browser}:${username}`).digest('base64url');

  return {
    knownBrowser(req, username) {
      const value = cookieValue(req.headers.cookie, DEVICE_COOKIE);
      const [browser, name, signature] = value?.split('.') ?? [];
      if (browser === undefined || name === undefined || signature === undefined) return null;
      if (Buffer.from(name, 'base64url').toString('utf8') !== username) return null;
      const actual = Buffer.from(signature);
      const valid = keys.some((key) => {
        const expected = Buffer.from(mac(key, browser, username));
        return expected.length === actual.length && timingSafeEqual(expected, actual);
      });
      return valid ? browser : null;
    },
    issue(username, browser) {
      const id = browser ?? randomBytes(12).toString('base64url');
      const value = `${id}.${Buffer.from(username).toString('base64url')}.${mac(keys[0] as string, id, username)}`;
      return `${DEVICE_COOKIE}=${value}; Path=${PATH}; Max-Age=${MAX_AGE_SECONDS}; HttpOnly; Secure; SameSite=Lax`;
    },
  };
}

function cookieValue(header: string | undefined, name: string): string | null {
  for (const pair of header?.split(';') ?? []) {
    const split = pair.indexOf('=');
    if (split > 0 && pair.slice(0, split).trim() === name) return pair.slice(split + 1).trim();
  }
  return null;
}
