/**
 * Keeps a guard in step with the control plane: subscribes to `/v1/stream` over mTLS with the
 * workload's SVID, hands every policy bundle to `guard.setPolicyBundle` (which verifies its signature
 * and never goes back to an older one), every revocation to `guard.revoke` and a changed trust
 * bundle (root rotation) to `guard.setTrustBundle`. Reconnects on its own
 * and resumes from the last revocation it saw. Fail-static: while the control plane is away the
 * guard keeps enforcing what it has.
 */
import { EventSource } from 'undici';
import { controlPlaneAgent } from './control-plane-agent.ts';
import type { RevocationKind } from '../store/store.ts';

/** What the stream drives: a Lockstep guard, or anything with the same three methods. */
export interface StreamTarget {
  setPolicyBundle(jws: string): Promise<unknown>;
  revoke(revocation: { kind: RevocationKind; value: string }): void;
  setTrustBundle(pem: string): void;
}

export type StreamEvent =
  | { readonly kind: 'connected' }
  | { readonly kind: 'disconnected' }
  | { readonly kind: 'policy'; readonly version: string }
  | { readonly kind: 'policy-refused'; readonly reason: string }
  /** The trust bundle changed (a root rotation step); the guard has it already. */
  | { readonly kind: 'trust-bundle'; readonly bundle: string }
  | { readonly kind: 'revocation'; readonly seq: number; readonly revocation: { kind: RevocationKind; value: string } };

export interface GuardStreamOptions {
  readonly url: string;
  readonly trustDomain: string;
  /** The workload's SVID chain and key, and the trust bundle. */
  readonly tls: { readonly cert: string; readonly key: string; readonly ca: string };
  readonly target: StreamTarget;
  readonly onEvent?: (event: StreamEvent) => void;
}

export interface GuardStream {
  /** The last revocation position applied. */
  readonly position: number;
  close(): Promise<void>;
}

const KINDS = new Set<RevocationKind>(['sub', 'txn', 'spiffeId', 'kid']);

export function connectGuardStream(options: GuardStreamOptions): GuardStream {
  const agent = controlPlaneAgent(options.trustDomain, options.tls);
  const notify = options.onEvent ?? (() => {});
  let position = 0;
  const source = new EventSource(new URL('/v1/stream', options.url), { dispatcher: agent });
  source.onopen = () => notify({ kind: 'connected' });
  source.onerror = () => notify({ kind: 'disconnected' });
  source.addEventListener('policy', (message) => {
    let version = '';
    void (async () => {
      const { version: announced, bundle } = JSON.parse(String((message as MessageEvent).data)) as { version: string; bundle: string };
      version = announced;
      await options.target.setPolicyBundle(bundle);
      notify({ kind: 'policy', version });
    })().catch((error: unknown) => notify({ kind: 'policy-refused', reason: `${version}: ${(error as Error).message}` }));
  });
  let bundle = options.tls.ca;
  source.addEventListener('trust-bundle', (message) => {
    const pem = (JSON.parse(String((message as MessageEvent).data)) as { bundle?: unknown }).bundle;
    if (typeof pem !== 'string' || !pem.includes('-----BEGIN CERTIFICATE-----') || pem === bundle) return;
    bundle = pem;
    options.target.setTrustBundle(pem);
    notify({ kind: 'trust-bundle', bundle: pem });
  });
  source.addEventListener('revocation', (message) => {
    const entry = JSON.parse(String((message as MessageEvent).data)) as { seq: number; kind: RevocationKind; value: string };
    if (!KINDS.has(entry.kind) || typeof entry.value !== 'string' || !Number.isSafeInteger(entry.seq)) return;
    options.target.revoke({ kind: entry.kind, value: entry.value });
    position = Math.max(position, entry.seq);
    notify({ kind: 'revocation', seq: entry.seq, revocation: { kind: entry.kind, value: entry.value } });
  });
  return {
    get position() {
      return position;
    },
    async close() {
      source.close();
      await agent.close();
    },
  };
}
