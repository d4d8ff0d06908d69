/**
 * Sealed key documents in both stores: the SQL that reads the same in both dialects, and rows ↔ records.
 * The stores keep what really differs: parameters, transactions, notifications.
 */
import type { SealedDocument } from './store.ts';

type Row = Record<string, unknown>;

/** Each name's newest generation. */
export const KEY_DOCUMENT_GENERATIONS =
  'SELECT name, MAX(generation) AS generation FROM key_documents GROUP BY name ORDER BY name';

/** Every kept generation of every name, whole: by name, then generation. */
export const ALL_KEY_DOCUMENTS = 'SELECT * FROM key_documents ORDER BY name, generation';

export function keyDocumentFromRow(row: Row): SealedDocument {
  const generation = typeof row.generation === 'string' ? Number(row.generation) : row.generation;
  if (typeof generation !== 'number' || !Number.isSafeInteger(generation))
    throw new TypeError(`store: column generation is not an integer: ${String(row.generation)}`);
  return {
    name: text(row.name, 'name'),
    generation,
    kekId: text(row.kek_id, 'kek_id'),
    wrappedDek: text(row.wrapped_dek, 'wrapped_dek'),
    sealed: text(row.sealed, 'sealed'),
  };
}

export function keyGenerationsFromRows(rows: readonly Row[]): Map<string, number> {
  return new Map(rows.map((row) => [text(row.name, 'name'), Number(row.generation)]));
}

/** A rewrap changes the wrapping only: the same name, generation and sealed text. */
export function checkRewrap(current: SealedDocument, rewrapped: SealedDocument): void {
  if (
    current.name !== rewrapped.name ||
    current.generation !== rewrapped.generation ||
    current.sealed !== rewrapped.sealed
  )
    throw new TypeError(
      `a rewrap changes only kekId and wrappedDek; got ${current.name}#${current.generation} → ` +
        `${rewrapped.name}#${rewrapped.generation}` +
        (current.sealed === rewrapped.sealed ? '' : ' with another sealed text'),
    );
}

function text(value: unknown, column: string): string {
  if (typeof value !== 'string') throw new TypeError(`store: column ${column} is not text`);
  return value;
}
