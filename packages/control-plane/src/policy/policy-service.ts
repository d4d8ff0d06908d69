/**
 * The policy service: watches the policy directory, validates every change strictly, refuses an
 * invalid set (an event saying why) and keeps serving the last good one, versions by content hash,
 * and signs each service's slice on demand (cached per version and service). Listeners hear about
 * every new version; the stream pushes it to the guards.
 */
import { watch, type FSWatcher } from 'node:fs';
import { loadPolicyDir, signBundle, sliceFor, type PolicySet } from '@lockstep/policy';
import type { JWK } from 'jose';
import type { SigningKey } from '../ca/signing-key.ts';

export type PolicyChange =
  | { readonly kind: 'applied'; readonly version: string; readonly policies: number }
  | { readonly kind: 'refused'; readonly reason: string; readonly keptVersion: string | null };

export interface SignedSlice {
  readonly version: string;
  readonly bundle: string;
}

export interface PolicyService {
  /** The version in force, or null before the first valid set. */
  readonly version: string | null;
  /** The whole set in force (for the control plane's own decisions, e.g. the TTS). */
  readonly set: PolicySet | null;
  /** Why the latest change was refused, while the directory still holds it; null once a change applies. */
  readonly lastRefusal: { readonly reason: string; readonly at: string } | null;
  /**
   * The signed bundle (JWS) of `service`'s slice of the set in force, and the slice's own version
   * (what that service's guard reports); null before any valid set.
   */
  bundleFor(service: string): Promise<SignedSlice | null>;
  /** The public key(s) guards verify bundles with (`policy.keys` of createGuard); served at /v1/policy/jwks.json. */
  readonly publicJwks: { readonly keys: readonly JWK[] };
  /** Loads the directory now (the watcher calls this on every change). */
  reload(): Promise<PolicyChange>;
  onChange(listener: (change: PolicyChange) => void): () => void;
  close(): void;
}

export interface PolicyServiceOptions {
  readonly dir: string;
  readonly signingKey: SigningKey;
  /** Watch the directory for changes (default true). */
  readonly watch?: boolean;
  /** Wait this long after the last file event before reloading: editors write in several steps. Default 50 ms. */
  readonly debounceMs?: number;
}

export async function createPolicyService(options: PolicyServiceOptions): Promise<PolicyService> {
  let current: PolicySet | null = null;
  let lastRefusal: { reason: string; at: string } | null = null;
  const signed = new Map<string, Promise<SignedSlice>>();
  const listeners = new Set<(change: PolicyChange) => void>();
  let loading: Promise<PolicyChange> = Promise.resolve({
    kind: 'refused',
    reason: 'not loaded yet',
    keptVersion: null,
  });

  const emit = (change: PolicyChange) => {
    for (const listener of listeners) listener(change);
  };

  async function load(): Promise<PolicyChange> {
    let set: PolicySet;
    try {
      set = await loadPolicyDir(options.dir);
    } catch (error) {
      const change: PolicyChange = {
        kind: 'refused',
        reason: (error as Error).message,
        keptVersion: current?.version ?? null,
      };
      lastRefusal = { reason: change.reason, at: new Date().toISOString() };
      emit(change);
      return change;
    }
    lastRefusal = null;
    if (current !== null && set.version === current.version)
      return { kind: 'applied', version: set.version, policies: Object.keys(set.policies).length };
    current = set;
    signed.clear();
    const change: PolicyChange = { kind: 'applied', version: set.version, policies: Object.keys(set.policies).length };
    emit(change);
    return change;
  }

  // Reloads run one after another, so that the last file event always wins.
  const reload = (): Promise<PolicyChange> => (loading = loading.then(load, load));
  await reload();

  let watcher: FSWatcher | null = null;
  let timer: NodeJS.Timeout | null = null;
  if (options.watch ?? true) {
    watcher = watch(options.dir, () => {
      if (timer !== null) clearTimeout(timer);
      timer = setTimeout(() => {
        timer = null;
        void reload();
      }, options.debounceMs ?? 50);
    });
  }

  const publicJwks = Object.freeze({ keys: Object.freeze([options.signingKey.publicJwk]) });
  return {
    publicJwks,
    get version() {
      return current?.version ?? null;
    },
    get set() {
      return current;
    },
    get lastRefusal() {
      return lastRefusal;
    },
    async bundleFor(service) {
      const set = current;
      if (set === null) return null;
      const key = `${set.version}\u0000${service}`;
      let bundle = signed.get(key);
      if (bundle === undefined) {
        const slice = sliceFor(set, service);
        bundle = signBundle(slice, { privateKey: options.signingKey.privateKey, kid: options.signingKey.kid }).then(
          (jws) => ({ version: slice.version, bundle: jws }),
        );
        signed.set(key, bundle);
      }
      return bundle;
    },
    reload,
    onChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    close() {
      watcher?.close();
      if (timer !== null) clearTimeout(timer);
    },
  };
}
