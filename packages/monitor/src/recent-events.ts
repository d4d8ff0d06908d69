/**
 * The newest decisions the monitor holds, read one way for every reader: the dashboard's events page
 * (`GET /dashboard/api/events`) and `lockstep events` (`GET /v1/admin/events`, admin-events.ts).
 *
 * Each source's newest real decisions are read backwards page by page, and a scanner's probes
 * (probes.ts) are kept apart, so that a scan's hundreds of probes never push the real traffic before
 * it out of view. A reader gets real traffic or probes, never both mixed, newest first.
 */
import type { ControlPlaneStore } from '@lockstep/control-plane';
import { isProbeEvent, type AuditEvent } from './probes.ts';

/** Real decisions kept in view per source. */
const EVENTS_PER_SOURCE = 200;
/** How far back each source is read for its newest real decisions and probes, at most. */
const READ_PER_SOURCE = 5_000;
/** The most events one answer holds. */
export const MAX_EVENTS = 500;
/** What `GET /v1/admin/events` answers without `limit`. */
export const DEFAULT_EVENT_LIMIT = 20;
const MAX_VALUE_LENGTH = 512;

/**
 * How a decision reads to an operator: `dry-run` is a denial that a guard in dry-run let through (stored
 * as `decision: "allow"`, `dryRun: true` and the would-be refusal as its reason).
 */
export const EVENT_DECISIONS = ['allow', 'deny', 'dry-run'] as const;
export type EventDecision = (typeof EVENT_DECISIONS)[number];

/** Exact matches on the stored event; `decision` as `decisionOf` reads it (an unknown value matches nothing). */
export interface EventFilter {
  readonly service?: string;
  readonly decision?: string;
  readonly reason?: string;
  readonly sub?: string;
  readonly txn?: string;
}

export const EVENT_FILTERS = ['service', 'decision', 'reason', 'sub', 'txn'] as const;

export interface EventQuery {
  readonly filter: EventFilter;
  /** 1 … MAX_EVENTS. */
  readonly limit: number;
  /** True: a scanner's probes only; false: real traffic only. */
  readonly probes: boolean;
  /** Sources not read at all (`lockstep events` leaves the control plane's own admin actions out unless asked). */
  readonly skipSources?: readonly string[];
}

export interface SourcedEvent {
  readonly source: string;
  readonly event: AuditEvent;
}

/**
 * Each source's newest real decisions (up to EVENTS_PER_SOURCE) and every probe read on the way,
 * parsed, with the source they came from (up to READ_PER_SOURCE events back).
 */
export async function recentDecisions(
  store: ControlPlaneStore,
  skipSources: readonly string[] = [],
): Promise<{ real: SourcedEvent[]; probes: SourcedEvent[] }> {
  const real: SourcedEvent[] = [];
  const probes: SourcedEvent[] = [];
  for (const head of await store.auditHeads()) {
    if (skipSources.includes(head.source)) continue;
    let found = 0;
    const oldest = Math.max(0, head.seq - READ_PER_SOURCE);
    for (let end = head.seq; end > oldest && found < EVENTS_PER_SOURCE; end -= EVENTS_PER_SOURCE) {
      const from = Math.max(0, end - EVENTS_PER_SOURCE);
      const page = await store.auditEvents(head.source, from, Math.min(end, EVENTS_PER_SOURCE));
      for (const stored of page.reverse()) {
        const event = JSON.parse(stored.event) as AuditEvent;
        if (isProbeEvent(event)) probes.push({ source: head.source, event });
        else if (found < EVENTS_PER_SOURCE) {
          real.push({ source: head.source, event });
          found += 1;
        }
      }
    }
  }
  return { real, probes };
}

/** The event's decision as an operator reads it (see EVENT_DECISIONS). */
export function decisionOf(event: AuditEvent): EventDecision {
  if (event.decision === 'deny') return 'deny';
  const letThrough = event.dryRun === true && !String(event.reason).startsWith('LOCKSTEP_ALLOW');
  return letThrough ? 'dry-run' : 'allow';
}

/** The newest events that match the query, newest first: as stored, parsed. */
export async function newestEvents(store: ControlPlaneStore, query: EventQuery): Promise<AuditEvent[]> {
  const { real, probes } = await recentDecisions(store, query.skipSources);
  const events = (query.probes ? probes : real)
    .map(({ event }) => event)
    .filter((event) => matches(event, query.filter));
  events.sort((a, b) => String(b.time).localeCompare(String(a.time)));
  return events.slice(0, query.limit);
}

function matches(event: AuditEvent, filter: EventFilter): boolean {
  return EVENT_FILTERS.every((name) => {
    const wanted = filter[name];
    if (wanted === undefined) return true;
    return (name === 'decision' ? decisionOf(event) : event[name]) === wanted;
  });
}

/**
 * A query from request parameters (`service`, `decision`, `reason`, `sub`, `txn`, `limit`, `probes`),
 * strictly: an unknown or repeated parameter, an empty value, a decision other than EVENT_DECISIONS,
 * a limit that is not a whole number from 1 to MAX_EVENTS are refused with a TypeError that says what
 * to send instead, naming the parameter as `spell` writes it. `lockstep events` checks its options with
 * it (spelt `--decision`) before it calls.
 */
export function parseEventQuery(
  parameters: Readonly<Record<string, unknown>>,
  spell: (name: string) => string = (name) => name,
): EventQuery {
  const filter: Record<string, string> = {};
  let limit = DEFAULT_EVENT_LIMIT;
  let probes = false;
  for (const [name, raw] of Object.entries(parameters)) {
    const value = singleValue(spell(name), raw);
    if ((EVENT_FILTERS as readonly string[]).includes(name)) {
      if (name === 'decision') checkDecision(spell(name), value);
      filter[name] = value;
    } else if (name === 'limit') {
      limit = limitOf(spell(name), value);
    } else if (name === 'probes') {
      probes = booleanOf(spell(name), value);
    } else {
      const known = `${EVENT_FILTERS.join(', ')}, limit and probes`;
      throw new TypeError(`unknown parameter ${JSON.stringify(name.slice(0, 64))}: this takes ${known}`);
    }
  }
  return { filter, limit, probes };
}

function singleValue(name: string, raw: unknown): string {
  if (typeof raw !== 'string') throw new TypeError(`${name} must be given once, as one value`);
  if (raw === '') throw new TypeError(`${name} is empty: give a value, or leave it out`);
  if (raw.length > MAX_VALUE_LENGTH) throw new TypeError(`${name} must be at most ${MAX_VALUE_LENGTH} characters`);
  return raw;
}

function checkDecision(name: string, value: string): void {
  if ((EVENT_DECISIONS as readonly string[]).includes(value)) return;
  throw new TypeError(`${name} must be one of ${EVENT_DECISIONS.join(', ')}; got ${JSON.stringify(value)}`);
}

function limitOf(name: string, value: string): number {
  const limit = Number(value);
  if (/^[0-9]{1,4}$/.test(value) && limit >= 1 && limit <= MAX_EVENTS) return limit;
  throw new TypeError(`${name} must be a whole number from 1 to ${MAX_EVENTS}; got ${JSON.stringify(value)}`);
}

function booleanOf(name: string, value: string): boolean {
  if (value === 'true' || value === 'false') return value === 'true';
  throw new TypeError(`${name} must be true or false; got ${JSON.stringify(value)}`);
}
