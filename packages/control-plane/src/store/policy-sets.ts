/**
 * Shared policy sets in both stores: the SQL that reads the same in both dialects, the checks of a
 * publication, and rows ↔ records. The stores keep what really differs: parameters, transactions,
 * notifications.
 */
import type { PolicyHead, SharedPolicySet } from './store.ts';

type Row = Record<string, unknown>;

/** The head with its set: one row, or none before the first publication. */
export const POLICY_HEAD = `SELECT h.seq, h.signature, s.version, s.sources, s.applied_at, s.applied_by
  FROM policy_head h JOIN policy_sets s ON s.version = h.version WHERE h.id = 1`;

export const POLICY_HEAD_SEQ = 'SELECT seq FROM policy_head WHERE id = 1';

/** Refuses a malformed publication (a caller's mistake) before anything is written. */
export function checkPublication(set: SharedPolicySet, expectedSeq: number): void {
  if (!Number.isSafeInteger(expectedSeq) || expectedSeq < 0)
    throw new TypeError(`expectedSeq is the head's position replaced, from 0 (none yet); got ${expectedSeq}`);
  if (typeof set.version !== 'string' || set.version === '')
    throw new TypeError(`version must be the set's content version; got ${JSON.stringify(set.version)}`);
  if (typeof set.appliedBy !== 'string' || !Number.isSafeInteger(set.appliedAt))
    throw new TypeError('appliedBy must be a string and appliedAt epoch milliseconds');
  if (typeof set.signature !== 'string' || set.signature === '')
    throw new TypeError("signature must be the publishing replica's signature of the head (a compact JWS)");
  if (typeof set.sources !== 'object' || set.sources === null || Object.keys(set.sources).length === 0)
    throw new TypeError('sources must be a non-empty record of file name to text');
  for (const [file, text] of Object.entries(set.sources))
    if (typeof text !== 'string') throw new TypeError(`sources[${JSON.stringify(file)}] must be a string`);
}

/** The sources as stored: JSON with the file names in order, so that one set is always the same text. */
export function sourcesText(sources: Readonly<Record<string, string>>): string {
  return JSON.stringify(
    Object.fromEntries(
      Object.keys(sources)
        .sort()
        .map((file) => [file, sources[file]]),
    ),
  );
}

export function policyHeadFromRow(row: Row): PolicyHead {
  const sources = JSON.parse(text(row.sources, 'sources')) as unknown;
  if (
    typeof sources !== 'object' ||
    sources === null ||
    Array.isArray(sources) ||
    Object.values(sources).some((value) => typeof value !== 'string')
  )
    throw new TypeError('store: column sources is not a record of file name to text');
  return {
    seq: integer(row.seq, 'seq'),
    version: text(row.version, 'version'),
    sources: sources as Record<string, string>,
    appliedAt: integer(row.applied_at, 'applied_at'),
    appliedBy: text(row.applied_by, 'applied_by'),
    signature: text(row.signature, 'signature'),
  };
}

export function policyHeadSeqFromRow(row: Row | undefined): number {
  return row === undefined ? 0 : integer(row.seq, 'seq');
}

function integer(value: unknown, column: string): number {
  const number = typeof value === 'string' || typeof value === 'bigint' ? Number(value) : value;
  if (typeof number !== 'number' || !Number.isSafeInteger(number))
    throw new TypeError(`store: column ${column} is not an integer: ${String(value)}`);
  return number;
}

function text(value: unknown, column: string): string {
  if (typeof value !== 'string') throw new TypeError(`store: column ${column} is not text`);
  return value;
}
