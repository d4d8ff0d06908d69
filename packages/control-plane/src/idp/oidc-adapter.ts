/**
 * oidc-provider's storage adapter on the control plane's store (SQLite or PostgreSQL): sessions,
 * interactions, authorization codes, grants and refresh tokens live where everything else does, so
 * that replicas share them and a restart loses no login.
 */
import type { ControlPlaneStore, OidcArtefact } from '../store/store.ts';

type Payload = Record<string, unknown> & { grantId?: string; userCode?: string; uid?: string; consumed?: number };

export interface OidcAdapter {
  upsert(id: string, payload: Payload, expiresIn?: number): Promise<void>;
  find(id: string): Promise<Payload | undefined>;
  findByUserCode(userCode: string): Promise<Payload | undefined>;
  findByUid(uid: string): Promise<Payload | undefined>;
  consume(id: string): Promise<void>;
  destroy(id: string): Promise<void>;
  revokeByGrantId(grantId: string): Promise<void>;
}

export function storeAdapter(
  store: ControlPlaneStore,
  now: () => number = Date.now,
): new (model: string) => OidcAdapter {
  // An expired artefact is as good as absent; the sweeper deletes it later.
  const live = (artefact: OidcArtefact | null): Payload | undefined => {
    if (artefact === null || (artefact.expiresAt !== null && artefact.expiresAt <= now())) return undefined;
    const payload = JSON.parse(artefact.payload) as Payload;
    return artefact.consumedAt === null ? payload : { ...payload, consumed: Math.floor(artefact.consumedAt / 1000) };
  };

  return class StoreAdapter implements OidcAdapter {
    readonly model: string;
    constructor(model: string) {
      this.model = model;
    }
    async upsert(id: string, payload: Payload, expiresIn?: number): Promise<void> {
      await store.upsertOidc({
        model: this.model,
        id,
        payload: JSON.stringify(payload),
        grantId: typeof payload.grantId === 'string' ? payload.grantId : null,
        userCode: typeof payload.userCode === 'string' ? payload.userCode : null,
        uid: typeof payload.uid === 'string' ? payload.uid : null,
        expiresAt: typeof expiresIn === 'number' && expiresIn > 0 ? now() + expiresIn * 1000 : null,
      });
    }
    async find(id: string) {
      return live(await store.findOidc(this.model, id));
    }
    async findByUserCode(userCode: string) {
      return live(await store.findOidcBy(this.model, 'userCode', userCode));
    }
    async findByUid(uid: string) {
      return live(await store.findOidcBy(this.model, 'uid', uid));
    }
    async consume(id: string) {
      await store.consumeOidc(this.model, id, now());
    }
    async destroy(id: string) {
      await store.destroyOidc(this.model, id);
    }
    async revokeByGrantId(grantId: string) {
      await store.revokeOidcGrant(grantId);
    }
  };
}
