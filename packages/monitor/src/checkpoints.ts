/**
 * Signed checkpoints: at a fixed interval, for every source, a JWS over { source, seq, hash, at }
 * with the control plane's audit key — also when nothing arrived since the last one, so that
 * silence is provable ("nothing happened between 10:00 and 10:05") and a trail cut short after a
 * checkpoint, or rewritten wholesale, no longer matches a signature nobody else can make.
 */
import { CompactSign, compactVerify, createLocalJWKSet, type JSONWebKeySet } from 'jose';
import type { AuditCheckpoint, ControlPlaneStore, KeyRing } from '@lockstep/control-plane';

export const CHECKPOINT_TYP = 'lockstep-audit-checkpoint+jws';

export interface CheckpointClaims {
  readonly source: string;
  readonly seq: number;
  readonly hash: string;
  readonly at: number;
}

export async function signCheckpoint(keys: KeyRing, claims: CheckpointClaims): Promise<AuditCheckpoint> {
  const key = keys.current();
  const signature = await new CompactSign(new TextEncoder().encode(JSON.stringify(claims)))
    .setProtectedHeader({ alg: 'ES256', kid: key.kid, typ: CHECKPOINT_TYP })
    .sign(key.privateKey);
  return { ...claims, signature };
}

/** The claims a checkpoint's signature covers, or null when it does not verify with `jwks`. */
export async function verifiedCheckpoint(checkpoint: AuditCheckpoint, jwks: JSONWebKeySet): Promise<CheckpointClaims | null> {
  try {
    const { payload, protectedHeader } = await compactVerify(checkpoint.signature, createLocalJWKSet(jwks), { algorithms: ['ES256'] });
    if (protectedHeader.typ !== CHECKPOINT_TYP) return null;
    return JSON.parse(new TextDecoder().decode(payload)) as CheckpointClaims;
  } catch {
    return null;
  }
}

export interface Checkpointer {
  /** Checkpoints every source now (the timer does it every interval). */
  checkpoint(): Promise<number>;
  stop(): void;
}

/** Every `intervalMs` (default 60 s), one signed checkpoint per known source. */
export function startCheckpointer(options: { store: ControlPlaneStore; keys: KeyRing; intervalMs?: number; now?: () => number; onError?: (error: Error) => void }): Checkpointer {
  const now = options.now ?? Date.now;
  const checkpoint = async () => {
    const heads = await options.store.auditHeads();
    const at = now();
    for (const head of heads) await options.store.addAuditCheckpoint(await signCheckpoint(options.keys, { source: head.source, seq: head.seq, hash: head.hash, at }));
    return heads.length;
  };
  const timer = setInterval(() => void checkpoint().catch((error: Error) => options.onError?.(error)), options.intervalMs ?? 60_000);
  timer.unref();
  return { checkpoint, stop: () => clearInterval(timer) };
}
