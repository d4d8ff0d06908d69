/**
 * The policy service: watches the policy directory, validates every change strictly, refuses an
 * invalid set (an event saying why) and keeps serving the last good one, versions by content hash,
 * and signs each service's slice on demand (cached per version and service). Listeners hear about
 * every new version; the stream pushes it to the guards.
 *
 * Shared mode (`shared`: replicas on one store): the policy in force is the store's head, the same on
 * every replica. A valid change of the directory is published there (compare-and-set on the head's
 * position) instead of applied here alone; every replica applies a new head when the store notifies it,
 * and on a periodic re-read behind the notifications. At start a replica adopts the head rather than
 * publishing its directory, so that a stale copy cannot roll policy back; only the first replica, with no
 * head yet, publishes its directory. A later edit of the directory publishes it.
 *
 * Every head is signed by the replica that published it, with the policy signing key the replicas share
 * (policy-head-signature.ts), and verified before it is adopted: a head a database writer made up or changed
 * is refused, as is an older signed head restored over a newer one (a position lower than one this process
 * has seen). A refused head leaves the set in force; a change saved in a directory publishes over it.
 */
import { watch, type FSWatcher } from 'node:fs';
import { hostname } from 'node:os';
import { resolve } from 'node:path';
import { policySetFromFiles, signBundle, sliceFor, type PolicySet } from '@lockstep/policy';
import type { JWK } from 'jose';
import type { SigningKey } from '../ca/signing-key.ts';
import type { ControlPlaneStore, PolicyHead } from '../store/store.ts';
import { policyHeadVerifier, signPolicyHead } from './policy-head-signature.ts';
import { readPolicyDirectory, type DirectoryPolicy } from './policy-sources.ts';
import { oneAtATime } from '../ca/key-document.ts';

export type PolicyChange =
  | {
      readonly kind: 'applied';
      readonly version: string;
      readonly policies: number;
      /** Shared mode: who published the set (a replica and its directory). */
      readonly appliedBy?: string;
    }
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
  /**
   * The version of the last valid set read from the directory, null before one. Shared mode: it differs
   * from `version` when the directory is stale (the head was adopted at start) or another replica
   * published since.
   */
  readonly directoryVersion: string | null;
  /** Shared mode: who published the set in force (a replica and its directory); null otherwise. */
  readonly publishedBy: string | null;
  /** Why the latest change was refused, while the directory still holds it; null once a change applies. */
  readonly lastRefusal: { readonly reason: string; readonly at: string } | null;
  /**
   * The signed bundle (JWS) of `service`'s slice of the set in force, and the slice's own version
   * (what that service's guard reports); null before any valid set.
   */
  bundleFor(service: string): Promise<SignedSlice | null>;
  /** The public key(s) guards verify bundles with (`policy.keys` of createGuard); served at /v1/policy/jwks.json. */
  readonly publicJwks: { readonly keys: readonly JWK[] };
  /** Loads the directory now (the watcher calls this on every change); shared mode: publishes a change. */
  reload(): Promise<PolicyChange>;
  onChange(listener: (change: PolicyChange) => void): () => void;
  close(): void;
}

export interface SharedPolicyOptions {
  /** The store the replicas share. */
  readonly store: Pick<ControlPlaneStore, 'publishPolicy' | 'policyHead' | 'policyHeadSeq' | 'watchPolicy'>;
  /** Re-read the head's position this often, behind the store's notifications (default 1000 ms: one tiny query). */
  readonly rereadMs?: number;
  /** Kept with each set this replica publishes (default `<host name>:<directory>`). */
  readonly appliedBy?: string;
}

export interface PolicyServiceOptions {
  readonly dir: string;
  readonly signingKey: SigningKey;
  /** Watch the directory for changes (default true). */
  readonly watch?: boolean;
  /** Wait this long after the last file event before reloading: editors write in several steps. Default 50 ms. */
  readonly debounceMs?: number;
  /** Replicas share the policy through this store (see above); without it, the directory is the policy. */
  readonly shared?: SharedPolicyOptions;
}

export async function createPolicyService(options: PolicyServiceOptions): Promise<PolicyService> {
  const shared = options.shared ?? null;
  const rereadMs = shared?.rereadMs ?? 1_000;
  if (!(rereadMs > 0))
    throw new TypeError(`shared.rereadMs must be a positive number of milliseconds; got ${rereadMs}`);
  const appliedBy = shared?.appliedBy ?? `${hostname()}:${resolve(options.dir)}`;
  let current: PolicySet | null = null;
  let publishedBy: string | null = null;
  let lastRefusal: { reason: string; at: string } | null = null;
  let directoryVersion: string | null = null;
  /** Shared mode: the head's position last read here, adopted or refused (0: none yet). Publications replace it. */
  let seq = 0;
  /**
   * Shared mode: the newest signed head this process adopted or published. A head at its position or before
   * (another signature) is a rollback. A restart forgets it.
   */
  let newest = { seq: 0, signature: '' };
  /**
   * Shared mode: the directory version that needs no publishing: the one found at start (the head was
   * adopted instead) and the last one published. Another one is an edit.
   */
  let settled: string | null = null;
  let closed = false;
  const signed = new Map<string, Promise<SignedSlice>>();
  const listeners = new Set<(change: PolicyChange) => void>();

  const emit = (change: PolicyChange) => {
    for (const listener of listeners) listener(change);
  };
  const inForce = (): PolicyChange =>
    current === null
      ? { kind: 'refused', reason: 'no valid policy set yet', keptVersion: null }
      : { kind: 'applied', version: current.version, policies: Object.keys(current.policies).length };
  const apply = (set: PolicySet, by?: string): PolicyChange => {
    publishedBy = by ?? null; // shared mode: the set in force published again names its latest publisher
    if (current !== null && set.version === current.version) return inForce();
    current = set;
    signed.clear();
    const change: PolicyChange = {
      kind: 'applied',
      version: set.version,
      policies: Object.keys(set.policies).length,
      ...(by === undefined ? {} : { appliedBy: by }),
    };
    emit(change);
    return change;
  };
  const refuse = (reason: string): PolicyChange => {
    const change: PolicyChange = { kind: 'refused', reason, keptVersion: current?.version ?? null };
    lastRefusal = { reason, at: new Date().toISOString() };
    emit(change);
    return change;
  };

  async function readDirectory(): Promise<DirectoryPolicy | PolicyChange> {
    try {
      const read = await readPolicyDirectory(options.dir);
      lastRefusal = null;
      directoryVersion = read.set.version;
      return read;
    } catch (error) {
      return refuse((error as Error).message);
    }
  }

  const verifyHead = shared === null ? null : await policyHeadVerifier(options.signingKey.publicJwk);

  /** Shared mode: makes `head` the set in force here, unless it already is, once its signature and position hold. */
  async function adopt(head: PolicyHead): Promise<void> {
    seq = head.seq;
    if (head.seq === newest.seq && head.signature === newest.signature) return;
    const named = `the shared policy set ${head.version} at position ${head.seq} (published by ${head.appliedBy})`;
    const unverified = verifyHead === null ? 'no key verifies it' : await verifyHead(head);
    if (unverified !== null) {
      refuse(
        `${named} is NOT adopted: ${unverified}. Only a replica holding the policy key publishes: a head changed in ` +
          'the database is refused. Saving a policy directory (the set in force, or an edit) publishes over it',
      );
      return;
    }
    if (head.seq <= newest.seq) {
      refuse(
        `${named} is NOT adopted: this replica has seen position ${newest.seq} already, so this head is a rollback ` +
          '(the database restored or rewritten). A restart forgets the positions seen: restoring policy from a ' +
          "backup is the operator's decision, by restarting the replicas",
      );
      return;
    }
    let set: PolicySet;
    try {
      set = policySetFromFiles(head.sources);
    } catch (error) {
      refuse(`${named} does not load here: ${(error as Error).message}`);
      return;
    }
    if (set.version !== head.version) {
      refuse(`${named} does not match its content (${set.version}): a replica of another Lockstep version`);
      return;
    }
    newest = { seq: head.seq, signature: head.signature };
    apply(set, head.appliedBy);
  }

  /** Shared mode: publishes `read` as the head after position `expectedSeq`, signed; false when it has moved. */
  async function publishAt(
    store: SharedPolicyOptions['store'],
    read: DirectoryPolicy,
    expectedSeq: number,
  ): Promise<boolean> {
    const publication = { version: read.set.version, sources: read.sources, appliedAt: Date.now(), appliedBy };
    const signature = await signPolicyHead({ ...publication, seq: expectedSeq + 1 }, options.signingKey);
    if (!(await store.publishPolicy({ ...publication, signature }, expectedSeq))) return false;
    seq = expectedSeq + 1;
    newest = { seq, signature };
    return true;
  }

  /**
   * Shared mode: publishes a valid directory set that is an edit, or the set in force again over a head this
   * replica refused; the store's head decides what is in force.
   */
  async function publish(store: SharedPolicyOptions['store'], read: DirectoryPolicy): Promise<PolicyChange> {
    const { version } = read.set;
    const republish = version === current?.version && seq > newest.seq;
    if (!republish && (version === current?.version || (version === settled && current !== null))) {
      settled = version;
      return inForce();
    }
    // Publishing behind a position seen would be refused by every replica that saw it.
    if (seq < newest.seq)
      return refuse(
        `policy ${version} from ${options.dir} NOT published: the store's policy head is at position ${seq}, ` +
          `behind position ${newest.seq} this replica has seen (the database restored or rewritten); restart the ` +
          'replicas once the database is as it should be',
      );
    let head: PolicyHead | null;
    try {
      if (await publishAt(store, read, seq)) {
        settled = version;
        return apply(read.set, appliedBy);
      }
      head = await store.policyHead();
    } catch (error) {
      return refuse(
        `policy ${version} from ${options.dir} NOT published: the store did not answer ` +
          `(${(error as Error).message}); save the directory again once it is back`,
      );
    }
    // Someone published meanwhile: theirs is in force, and this edit was made without seeing it.
    if (head !== null) await adopt(head);
    const fate = head?.signature === newest.signature ? 'which is in force' : 'which this replica refused';
    return refuse(
      `policy ${version} from ${options.dir} NOT published: another replica (${head?.appliedBy ?? 'unknown'}) ` +
        `published ${head?.version ?? 'a set'} meanwhile, ${fate}; save the directory again to publish over it`,
    );
  }

  async function load(): Promise<PolicyChange> {
    const read = await readDirectory();
    if (!('set' in read)) return read;
    return shared === null ? apply(read.set) : publish(shared.store, read);
  }

  /** Shared mode, at start: the head if there is one; else this directory, published as the first head. */
  async function start(store: SharedPolicyOptions['store']): Promise<PolicyChange> {
    const read = await readDirectory();
    const directory = 'set' in read ? read : null;
    const refusal = 'set' in read ? null : read;
    settled = directory?.set.version ?? null;
    let head = await store.policyHead();
    if (head === null && directory !== null) {
      if (await publishAt(store, directory, 0)) return apply(directory.set, appliedBy);
      head = await store.policyHead(); // another replica, starting at the same time, was first
    }
    if (head !== null) await adopt(head);
    return refusal ?? inForce();
  }

  /** Shared mode: applies the head when it moved (a notification, or the periodic re-read). */
  async function follow(store: SharedPolicyOptions['store']): Promise<void> {
    if (closed || (await store.policyHeadSeq()) === seq) return;
    const head = await store.policyHead();
    if (head !== null && !closed) await adopt(head);
  }

  // Everything runs one after another: the last file event wins, and a head is never applied midway.
  const serial = oneAtATime();
  const reload = (): Promise<PolicyChange> => serial(load);

  let following = false;
  const followSoon = (): void => {
    if (shared === null || following) return;
    following = true;
    void serial(async () => {
      following = false;
      await follow(shared.store);
    }).catch(() => {}); // the store is unreachable now: the next notification or re-read tries again
  };

  let stopWatching: (() => Promise<void>) | null = null;
  let rereading: NodeJS.Timeout | null = null;
  if (shared === null) await reload();
  else {
    // Listening before the head is read: nothing published in between is missed.
    stopWatching = (await shared.store.watchPolicy?.(followSoon)) ?? null;
    try {
      await serial(() => start(shared.store));
    } catch (error) {
      await stopWatching?.();
      throw error;
    }
    rereading = setInterval(followSoon, rereadMs);
    rereading.unref();
  }

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
    get directoryVersion() {
      return directoryVersion;
    },
    get publishedBy() {
      return publishedBy;
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
      closed = true;
      watcher?.close();
      if (timer !== null) clearTimeout(timer);
      if (rereading !== null) clearInterval(rereading);
      void stopWatching?.().catch(() => {});
    },
  };
}
