/**
 * Request ids: `<prefix>-<n in base 36>`, the prefix random per process. The audit writer rebuilds
 * an id from its number on its own thread (`requestIdOf`), so the request thread hands it a number.
 */
import { randomBytes } from 'node:crypto';

export const REQUEST_ID_PREFIX = randomBytes(4).toString('hex');
let counter = 0;

/** The next request's number. */
export function nextRequestSeq(): number {
  return ++counter;
}

export function requestIdOf(seq: number, prefix: string = REQUEST_ID_PREFIX): string {
  return `${prefix}-${seq.toString(36)}`;
}
