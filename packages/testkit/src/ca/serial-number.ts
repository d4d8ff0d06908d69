import { randomBytes } from 'node:crypto';

/**
 * 16 random octets as hex, top bit cleared so the DER INTEGER is positive without a
 * padding octet, and never zero (RFC 5280 §4.1.2.2: positive, at most 20 octets).
 */
export function randomSerialNumber(): string {
  const octets = randomBytes(16);
  octets[0] = (octets[0]! & 0x7f) | 0x01;
  return octets.toString('hex');
}
