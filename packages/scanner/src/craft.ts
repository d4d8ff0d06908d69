/**
 * What the scanner makes itself: tokens no trusted key signed (unsigned, forged, or signed with a
 * key nobody trusts) from a genuine token's claims, and a certificate from a CA nobody trusts.
 */
import { randomBytes } from 'node:crypto';
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { workloadId } from '@lockstep/identity';
import {
  CompactEncrypt,
  CompactSign,
  SignJWT,
  base64url,
  calculateJwkThumbprint,
  decodeJwt,
  decodeProtectedHeader,
  exportJWK,
  exportSPKI,
  generateKeyPair,
  importJWK,
  type CryptoKey,
  type JWK,
} from 'jose';
import type { CraftedToken } from './catalogue/attack.ts';
import type { Credential } from './send.ts';

x509.cryptoProvider.set(globalThis.crypto);
const TYP = 'txntoken+jwt';
const segment = (value: object | Uint8Array) =>
  base64url.encode(value instanceof Uint8Array ? value : JSON.stringify(value));

export async function craftTokens(
  genuine: string,
  trustDomain: string,
  txnJwks: { keys: Record<string, unknown>[] },
): Promise<Record<CraftedToken, string>> {
  const claims = decodeJwt(genuine);
  const header = decodeProtectedHeader(genuine);
  const published = (txnJwks.keys.find((key) => key.kid === header.kid) ?? txnJwks.keys[0]) as JWK | undefined;
  if (published === undefined) throw new Error('the Txn-Token Service publishes no key');
  const publicKey = (await importJWK(published, 'ES256')) as CryptoKey;
  const attacker = await generateKeyPair('ES256');
  const attackerJwk = await exportJWK(attacker.publicKey);
  const attackerKid = await calculateJwkThumbprint(attackerJwk);
  const unsigned = (alg: string) => `${segment({ alg, typ: TYP })}.${segment(claims)}.`;
  const attackerSigned = (extra: Record<string, unknown>) =>
    new CompactSign(new TextEncoder().encode(JSON.stringify(claims)))
      .setProtectedHeader({ alg: 'ES256', typ: TYP, ...extra })
      .sign(attacker.privateKey);
  const hmac = (secret: Uint8Array) =>
    new SignJWT(claims).setProtectedHeader({ alg: 'HS256', typ: TYP, kid: header.kid ?? '' }).sign(secret);
  const [realHeader, , signature] = genuine.split('.');
  return {
    'alg-none': unsigned('none'),
    'alg-none-title': unsigned('None'),
    'alg-none-upper': unsigned('NONE'),
    'alg-none-mixed': unsigned('nOnE'),
    'signature-stripped': genuine.slice(0, genuine.lastIndexOf('.') + 1),
    'hs256-public-key-pem': await hmac(new TextEncoder().encode(await exportSPKI(publicKey))),
    'hs256-public-key-der': await hmac(new Uint8Array(await crypto.subtle.exportKey('spki', publicKey))),
    'ecdsa-zero-signature': `${realHeader}.${segment(claims)}.${segment(new Uint8Array(64))}`,
    'payload-tampered': `${realHeader}.${segment({ ...claims, sub: 'admin', tctx: { roles: ['admin'] } })}.${signature}`,
    'embedded-jwk': await attackerSigned({ kid: header.kid, jwk: attackerJwk }),
    jku: await attackerSigned({ kid: attackerKid, jku: 'https://127.0.0.1:1/jwks.json' }),
    x5u: await attackerSigned({ kid: attackerKid, x5u: 'https://127.0.0.1:1/cert.pem' }),
    'kid-traversal': await attackerSigned({ kid: '../../../../etc/passwd' }),
    'kid-unknown': await attackerSigned({ kid: `unknown-${attackerKid}` }),
    jwe: await new CompactEncrypt(new TextEncoder().encode(JSON.stringify(claims)))
      .setProtectedHeader({ alg: 'dir', enc: 'A256GCM', typ: TYP, kid: header.kid ?? '' })
      .encrypt(randomBytes(32)),
    'foreign-trust-domain': await new SignJWT({
      ...claims,
      aud: `foreign.${trustDomain}`,
      req_wl: workloadId(`foreign.${trustDomain}`, 'gateway'),
    })
      .setProtectedHeader({ alg: 'ES256', typ: TYP, kid: attackerKid })
      .sign(attacker.privateKey),
    oversized: `${realHeader}.${segment({ ...claims, pad: 'a'.repeat(768 * 1024) })}.${signature}`,
  };
}

/** A CA nobody trusts, and a well-formed SVID from it for `spiffeId` (the foreign-CA attack). */
export async function foreignCaCredential(spiffeId: string): Promise<Credential> {
  const algorithm = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
  const caKeys = await crypto.subtle.generateKey(algorithm, true, ['sign', 'verify']);
  const leafKeys = await crypto.subtle.generateKey(algorithm, true, ['sign', 'verify']);
  const now = Date.now();
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    name: 'CN=lockstep scan foreign CA',
    keys: caKeys,
    signingAlgorithm: algorithm,
    serialNumber: '01',
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + 3_600_000),
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true),
    ],
  });
  const leaf = await x509.X509CertificateGenerator.create({
    issuer: ca.subject,
    subject: '',
    publicKey: leafKeys.publicKey,
    signingKey: caKeys.privateKey,
    signingAlgorithm: algorithm,
    serialNumber: '02',
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + 3_600_000),
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth]),
      new x509.SubjectAlternativeNameExtension([{ type: 'url', value: spiffeId }], true),
    ],
  });
  const key = x509.PemConverter.encode(await crypto.subtle.exportKey('pkcs8', leafKeys.privateKey), 'PRIVATE KEY');
  return { name: 'foreign-ca', cert: `${leaf.toString('pem')}\n${ca.toString('pem')}\n`, key };
}
