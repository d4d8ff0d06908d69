/**
 * A bounded map that forgets the least recently inserted entries first, bounded both in entries and
 * in (estimated) bytes. Insertion order is enough here: entries are immutable and expire on their own,
 * so the cost of a true LRU (a delete and re-insert on every hit) buys nothing on the hot path. With
 * `expired`, each insertion also drops expired entries from the oldest end, so that a quiet period's
 * tokens do not sit in memory until they are pushed out.
 */
export interface BoundedCacheOptions<V> {
  /** Most entries held. */
  readonly entries: number;
  /** Most bytes held, as `bytesOf` estimates them. */
  readonly bytes?: number;
  readonly bytesOf?: (value: V) => number;
  readonly expired?: (value: V) => boolean;
}

// Dropping expired entries on insertion looks at no more than this many of the oldest.
const EXPIRED_PER_INSERT = 4;

export class BoundedCache<K, V> {
  readonly #limit: number;
  readonly #byteLimit: number;
  readonly #bytesOf: (value: V) => number;
  readonly #expired: ((value: V) => boolean) | undefined;
  readonly #entries = new Map<K, V>();
  #bytes = 0;

  constructor(options: number | BoundedCacheOptions<V>) {
    const {
      entries,
      bytes = Infinity,
      bytesOf = () => 0,
      expired,
    } = typeof options === 'number' ? { entries: options } : options;
    if (!Number.isInteger(entries) || entries < 1)
      throw new TypeError(`cache size must be a positive integer, got ${entries}`);
    if (bytes !== Infinity && (!Number.isInteger(bytes) || bytes < 1))
      throw new TypeError(`cache bytes must be a positive integer, got ${bytes}`);
    this.#limit = entries;
    this.#byteLimit = bytes;
    this.#bytesOf = bytesOf;
    this.#expired = expired;
  }

  get(key: K): V | undefined {
    return this.#entries.get(key);
  }

  set(key: K, value: V): void {
    this.delete(key);
    const size = this.#bytesOf(value);
    if (this.#expired !== undefined) {
      for (let i = 0; i < EXPIRED_PER_INSERT; i++) {
        const oldest = this.#entries.entries().next();
        if (oldest.done || !this.#expired(oldest.value[1])) break;
        this.delete(oldest.value[0]);
      }
    }
    while (this.#entries.size > 0 && (this.#entries.size >= this.#limit || this.#bytes + size > this.#byteLimit)) {
      const oldest = this.#entries.keys().next();
      if (oldest.done) break;
      this.delete(oldest.value);
    }
    this.#entries.set(key, value);
    this.#bytes += size;
  }

  delete(key: K): void {
    const value = this.#entries.get(key);
    if (value === undefined) return;
    this.#entries.delete(key);
    this.#bytes -= this.#bytesOf(value);
  }

  /** Removes every entry for which `predicate` holds. */
  purge(predicate: (value: V, key: K) => boolean): number {
    let removed = 0;
    for (const [key, value] of this.#entries) {
      if (predicate(value, key)) {
        this.delete(key);
        removed++;
      }
    }
    return removed;
  }

  clear(): void {
    this.#entries.clear();
    this.#bytes = 0;
  }

  get size(): number {
    return this.#entries.size;
  }

  /** The estimated bytes held. */
  get bytes(): number {
    return this.#bytes;
  }
}
