/**
 * Passwords: one policy for the whole system and scrypt hashes (`node:crypto`).
 *
 * The policy is NIST SP 800-63B's, not composition rules: at least 12 characters, at most 256, not
 * on the bundled list of common passwords (data/common-passwords.txt.gz), not the user's own name.
 * Any character is allowed; nothing is trimmed or case-folded.
 *
 * A hash is `scrypt$<log2 N>$<r>$<p>$<salt>$<key>` (salt and key base64url), so that the cost can be
 * raised later and old hashes still verify (`needsRehash` says when to re-hash after a login).
 */
import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';

export const PASSWORD_MIN_LENGTH = 12;
export const PASSWORD_MAX_LENGTH = 256;

// OWASP's Password Storage Cheat Sheet minimum for scrypt: N=2^17, r=8, p=1 (128 MiB, ~0.3 s per hash).
const DEFAULT_COST = { log2N: 17, r: 8, p: 1 } as const;
const KEY_LENGTH = 32;

let commonPasswords: Set<string> | null = null;

function common(): Set<string> {
  commonPasswords ??= new Set(
    gunzipSync(readFileSync(new URL('../../data/common-passwords.txt.gz', import.meta.url)))
      .toString('utf8')
      .split('\n')
      .filter(Boolean),
  );
  return commonPasswords;
}

/** Why `password` is not acceptable for `username`, or null when it is. Phrased for the user. */
export function passwordProblem(password: string, username?: string): string | null {
  const length = [...password].length;
  if (length < PASSWORD_MIN_LENGTH)
    return `Use at least ${PASSWORD_MIN_LENGTH} characters (this one has ${length}). A few unrelated words make a long password that is easy to remember.`;
  if (length > PASSWORD_MAX_LENGTH) return `Use at most ${PASSWORD_MAX_LENGTH} characters.`;
  const folded = password.toLowerCase();
  if (username !== undefined && folded.includes(username.toLowerCase()))
    return 'Do not use your user name in your password.';
  if (common().has(folded))
    return 'This password is on a list of commonly used passwords that attackers try first. Choose another.';
  return null;
}

/**
 * A random password that meets the policy (20 characters of base64url: 120 bits) — for `username`
 * too: a short name turns up in a random string now and then (`ops` once in about 2,000), so such a
 * draw is replaced.
 */
export function generatePassword(username?: string): string {
  for (;;) {
    const password = randomBytes(15).toString('base64url');
    if (passwordProblem(password, username) === null) return password;
  }
}

function derive(password: string, salt: Buffer, cost: { log2N: number; r: number; p: number }): Promise<Buffer> {
  const N = 2 ** cost.log2N;
  const options: ScryptOptions = { N, r: cost.r, p: cost.p, maxmem: 256 * N * cost.r };
  return new Promise((resolve, reject) => {
    scrypt(password.normalize('NFC'), salt, KEY_LENGTH, options, (error, key) =>
      error ? reject(error) : resolve(key),
    );
  });
}

export async function hashPassword(
  password: string,
  cost: { log2N: number; r: number; p: number } = DEFAULT_COST,
): Promise<string> {
  const salt = randomBytes(16);
  const key = await derive(password, salt, cost);
  return ['scrypt', cost.log2N, cost.r, cost.p, salt.toString('base64url'), key.toString('base64url')].join('$');
}

const HASH = /^scrypt\$(\d{1,2})\$(\d{1,2})\$(\d{1,2})\$([A-Za-z0-9_-]{16,})\$([A-Za-z0-9_-]{16,})$/;

/** True when `password` matches `hash`; a malformed hash never matches. Constant-time comparison. */
export async function verifyPassword(password: string, hash: string): Promise<boolean> {
  const match = HASH.exec(hash);
  if (match === null) return false;
  const [, log2N, r, p, salt, key] = match;
  const cost = { log2N: Number(log2N), r: Number(r), p: Number(p) };
  if (cost.log2N < 10 || cost.log2N > 20 || cost.r < 1 || cost.p < 1) return false;
  const expected = Buffer.from(key as string, 'base64url');
  const actual = await derive(password, Buffer.from(salt as string, 'base64url'), cost);
  return actual.length === expected.length && timingSafeEqual(actual, expected);
}

/** True when `hash` was made with less than the current cost: re-hash it after a successful login. */
export function needsRehash(hash: string, cost: { log2N: number; r: number; p: number } = DEFAULT_COST): boolean {
  const match = HASH.exec(hash);
  return match === null || Number(match[1]) < cost.log2N || Number(match[2]) < cost.r || Number(match[3]) < cost.p;
}

let dummy: Promise<string> | null = null;

/** Spends the time of one verification, for an unknown user name (no timing oracle for which names exist). */
export async function verifyAgainstNothing(password: string): Promise<false> {
  dummy ??= hashPassword(generatePassword());
  await verifyPassword(password, await dummy);
  return false;
}
