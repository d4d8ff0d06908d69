/**
 * What has been revoked: a subject (user), a transaction, a workload (SPIFFE ID) or a Txn-Token
 * signing key. The control plane pushes these over its stream (`guard.revoke(…)`), and takes one
 * back when an administrator lifts a revocation made by mistake (`guard.lift(…)`). Listeners let
 * caches purge what a revocation invalidates; a lift invalidates nothing (every cached token is
 * checked against these sets again on every request).
 */
export type RevocationKind = 'sub' | 'txn' | 'spiffeId' | 'kid';

export interface Revocation {
  kind: RevocationKind;
  value: string;
}

export class Revocations {
  readonly sub = new Set<string>();
  readonly txn = new Set<string>();
  readonly spiffeId = new Set<string>();
  readonly kid = new Set<string>();
  readonly #listeners: Array<(revocation: Revocation) => void> = [];

  add(revocation: Revocation): void {
    check(revocation);
    this[revocation.kind].add(revocation.value);
    for (const listener of this.#listeners) listener(revocation);
  }

  /** Takes a revocation back; false when the value was not revoked. */
  remove(revocation: Revocation): boolean {
    check(revocation);
    return this[revocation.kind].delete(revocation.value);
  }

  onRevoke(listener: (revocation: Revocation) => void): void {
    this.#listeners.push(listener);
  }
}

function check(revocation: Revocation): void {
  if (!['sub', 'txn', 'spiffeId', 'kid'].includes(revocation.kind)) {
    throw new TypeError(
      `unknown revocation kind ${JSON.stringify(revocation.kind)}: use "sub", "txn", "spiffeId" or "kid"`,
    );
  }
  if (typeof revocation.value !== 'string' || revocation.value === '') {
    throw new TypeError('a revocation needs a non-empty string value');
  }
}
