/**
 * A bounded LRU map: Map keeps insertion order, so a hit is re-inserted at the end and the
 * oldest entry is the first key. Bounded in entries (capacity 0 disables caching) and in estimated
 * bytes: an entry counts its key at 2 bytes a character plus DECISION_ENTRY_BYTES for the frozen
 * result and the Map's slot (the results themselves are small and mostly shared).
 */
export const DECISION_ENTRY_BYTES = 300;

export class DecisionCache<V> {
  readonly #entries = new Map<string, V>();
  readonly #capacity: number;
  readonly #maxBytes: number;
  #bytes = 0;

  constructor(capacity: number, maxBytes = Infinity) {
    this.#capacity = capacity;
    this.#maxBytes = maxBytes;
  }

  get(key: string): V | undefined {
    const value = this.#entries.get(key);
    if (value !== undefined) {
      this.#entries.delete(key);
      this.#entries.set(key, value);
    }
    return value;
  }

  set(key: string, value: V): void {
    if (this.#capacity === 0) return;
    if (this.#entries.delete(key)) this.#bytes -= entryBytes(key);
    this.#entries.set(key, value);
    this.#bytes += entryBytes(key);
    while (this.#entries.size > 1 && (this.#entries.size > this.#capacity || this.#bytes > this.#maxBytes)) {
      const oldest = this.#entries.keys().next();
      if (oldest.done) break;
      this.#entries.delete(oldest.value);
      this.#bytes -= entryBytes(oldest.value);
    }
  }

  clear(): void {
    this.#entries.clear();
    this.#bytes = 0;
  }

  /** The estimated bytes held. */
  get bytes(): number {
    return this.#bytes;
  }

  get size(): number {
    return this.#entries.size;
  }
}

const entryBytes = (key: string) => DECISION_ENTRY_BYTES + 2 * key.length;
