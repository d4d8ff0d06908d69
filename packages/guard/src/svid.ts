/**
 * This service's own X.509-SVID: checked when it is configured or rotated (it must be a valid SVID of
 * our trust domain, under the same X509-SVID leaf rules as any peer's, whose key matches), then used
 * for the TLS server and for outbound calls.
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { DEFAULT_MAX_SVID_LIFETIME_SECONDS, workloadId } from '@lockstep/identity';
import { GuardConfigError, GuardError } from './errors.ts';
import type { SvidPem } from './options.ts';
import { identityFromCertificate } from './steps/transport.ts';

export interface LoadedSvid {
  readonly cert: string;
  readonly key: string;
  readonly spiffeId: string;
  readonly notAfterMs: number;
}

/**
 * `maxLifetimeSeconds`: the guard's `svidRules.maxLifetimeSeconds`, so that a guard refuses at
 * start-up the SVID its peers would refuse; the default is the rules' ceiling (24 h).
 */
export function loadSvid(
  svid: SvidPem,
  trustDomain: string,
  service: string,
  maxLifetimeSeconds = DEFAULT_MAX_SVID_LIFETIME_SECONDS,
): LoadedSvid {
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(svid.cert);
  } catch (error) {
    throw new GuardConfigError(`svid.cert is not a PEM certificate (${(error as Error).message})`);
  }
  let identity;
  try {
    identity = identityFromCertificate(leaf.raw, trustDomain, maxLifetimeSeconds);
  } catch (error) {
    throw new GuardConfigError(
      `svid.cert is not an X.509-SVID of trust domain ${trustDomain}: ${error instanceof GuardError ? error.detail : String(error)}`,
    );
  }
  if (identity.service !== service) {
    throw new GuardConfigError(
      `svid.cert names ${identity.spiffeId}, but this guard protects service "${service}"; ` +
        `use the SVID issued for ${workloadId(trustDomain, service)}`,
    );
  }
  let keyMatches = false;
  try {
    keyMatches = leaf.checkPrivateKey(createPrivateKey(svid.key));
  } catch (error) {
    throw new GuardConfigError(`svid.key is not a PEM private key (${(error as Error).message})`);
  }
  if (!keyMatches)
    throw new GuardConfigError('svid.key does not belong to svid.cert; give the key the certificate was issued for');
  if (Date.parse(leaf.validTo) <= Date.now())
    throw new GuardConfigError(`svid.cert expired at ${leaf.validTo}; renew it`);
  return Object.freeze({
    cert: svid.cert,
    key: svid.key,
    spiffeId: identity.spiffeId,
    notAfterMs: identity.notAfterMs,
  });
}
