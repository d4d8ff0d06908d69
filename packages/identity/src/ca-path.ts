/**
 * What a certificate on a certification path says about the path, read from its DER by
 * @peculiar/x509: for a decision service that verifies a chain a proxy presented (node:crypto checks
 * issuance and signatures, but not RFC 5280's path rules). Read here, in the one package that reads
 * certificate extensions, so that no caller parses ASN.1.
 */
// @peculiar/x509 loads tsyringe, which needs the Reflect metadata polyfill first; ESM evaluates imports in order.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(globalThis.crypto);

/** The extensions a path check understands; any other marked critical refuses the certificate. */
const HANDLED_CRITICAL = new Set([
  '2.5.29.19', // basicConstraints
  '2.5.29.15', // keyUsage
  '2.5.29.37', // extendedKeyUsage
  '2.5.29.17', // subjectAltName
  '2.5.29.30', // nameConstraints (a path through one is refused, see `nameConstrained`)
  '2.5.29.14', // subjectKeyIdentifier
  '2.5.29.35', // authorityKeyIdentifier
]);

const NAME_CONSTRAINTS = '2.5.29.30';

export interface CaPathFacts {
  /** basicConstraints' pathLenConstraint: how many CAs may follow this one below it; undefined: no limit. */
  readonly pathLength: number | undefined;
  /** Carries nameConstraints (critical or not). */
  readonly nameConstrained: boolean;
  /** OIDs of critical extensions a path check does not understand (RFC 5280 §4.2: refuse the certificate). */
  readonly unhandledCritical: readonly string[];
}

export function readCaPathFacts(der: Uint8Array): CaPathFacts {
  const certificate = new x509.X509Certificate(der);
  const basic = certificate.getExtension(x509.BasicConstraintsExtension);
  return {
    pathLength: basic?.ca === true ? basic.pathLength : undefined,
    nameConstrained: certificate.extensions.some((extension) => extension.type === NAME_CONSTRAINTS),
    unhandledCritical: certificate.extensions
      .filter((extension) => extension.critical && !HANDLED_CRITICAL.has(extension.type))
      .map((extension) => extension.type),
  };
}
