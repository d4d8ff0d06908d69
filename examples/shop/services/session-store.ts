/**
 * The gateway's signed-in sessions: in memory, and bounded, so that sign-ins cannot grow it without
 * end. A user has at most `perUser` sessions (browsers, devices): one more signs the least recently
 * used of them out. All users together have at most `total`: past it the least recently used session
 * of anyone is signed out. A session also ends when idle for `idleMs` or older than `maxMs`.
 *
 * Only a sign-in that succeeded adds a session (valid credentials, within the sign-in budget), so the
 * per-user bound stops one account from filling the store, and the total bound needs `total / perUser`
 * accounts signing in to reach (edge-limits.ts has the numbers; docs/operations.md what they cost).
 */
export interface Session {
  readonly id: string;
  readonly sub: string;
  readonly csrf: string;
  readonly createdAt: number;
  lastSeen: number;
  accessToken: string;
  refreshToken: string | undefined;
  expiresAt: number;
}

export interface SessionLimits {
  readonly perUser: number;
  readonly total: number;
  readonly idleMs: number;
  readonly maxMs: number;
}

export class SessionStore {
  readonly #limits: SessionLimits;
  // Least recently used first: a session used again moves to the end (Map keeps insertion order).
  readonly #sessions = new Map<string, Session>();
  readonly #byUser = new Map<string, Set<string>>();

  constructor(limits: SessionLimits) {
    this.#limits = limits;
  }

  get size(): number {
    return this.#sessions.size;
  }

  /** Adds a session; returns the sessions it ended to stay within the bounds (to be logged). */
  add(session: Session): Session[] {
    const ended: Session[] = [];
    const mine = this.#byUser.get(session.sub);
    // The first of each is its least recently used.
    while (mine !== undefined && mine.size >= this.#limits.perUser) {
      ended.push(this.#end(mine.values().next().value as string));
    }
    while (this.#sessions.size >= this.#limits.total) {
      ended.push(this.#end(this.#sessions.keys().next().value as string));
    }
    this.#sessions.set(session.id, session);
    const ids = this.#byUser.get(session.sub) ?? new Set<string>();
    ids.add(session.id);
    this.#byUser.set(session.sub, ids);
    return ended;
  }

  /** Whether `id` names a session (for the request budgets: a made-up cookie buys nothing), without using it. */
  has(id: string): boolean {
    return this.#sessions.has(id);
  }

  /** The session `id` names, if it is live: it counts as used now. */
  use(id: string, now = Date.now()): Session | null {
    const session = this.#sessions.get(id);
    if (session === undefined) return null;
    if (this.#expired(session, now)) {
      this.#end(id);
      return null;
    }
    session.lastSeen = now;
    this.#sessions.delete(id);
    this.#sessions.set(id, session);
    const ids = this.#byUser.get(session.sub);
    ids?.delete(id);
    ids?.add(id);
    return session;
  }

  delete(id: string): void {
    if (this.#sessions.has(id)) this.#end(id);
  }

  /** Ends every session idle or old past its limit. */
  sweep(now = Date.now()): void {
    for (const [id, session] of this.#sessions) if (this.#expired(session, now)) this.#end(id);
  }

  #expired(session: Session, now: number): boolean {
    return now - session.lastSeen > this.#limits.idleMs || now - session.createdAt > this.#limits.maxMs;
  }

  #end(id: string): Session {
    const session = this.#sessions.get(id) as Session;
    this.#sessions.delete(id);
    const ids = this.#byUser.get(session.sub);
    ids?.delete(id);
    if (ids?.size === 0) this.#byUser.delete(session.sub);
    return session;
  }
}
