/**
 * `lockstep events`: the newest decisions the monitor holds, newest first, one line each — what the
 * dashboard's events page shows, without a browser sign-in. Read from the admin API
 * (`GET /v1/admin/events`, the monitor's admin-events.ts) with the local administrator's SVID; the
 * read is recorded in the audit trail like every admin call. Options are checked here with the
 * monitor's own rules (`parseEventQuery`) before anything is sent.
 */
import { parseArgs } from 'node:util';
import { decisionOf, EVENT_FILTERS, EVENTS_PATH, parseEventQuery, type AuditEvent } from '@lockstep/monitor';
import { UsageError } from './state.ts';

type Out = (line: string) => void;
/** A GET of the admin API (main.ts's `admin`). */
type AdminGet = (method: 'GET', path: string) => Promise<Record<string, unknown>>;

export const EVENTS_USAGE =
  'usage: lockstep events [--service <name>] [--decision allow|deny|dry-run] ' +
  '[--reason <code>] [--sub <user>] [--txn <id>] [--limit <n>] [--json] [--probes]';

export async function eventsCommand(argv: readonly string[], out: Out, admin: AdminGet): Promise<number> {
  const { values, positionals } = parseArgs({
    args: [...argv],
    allowPositionals: true,
    options: {
      service: { type: 'string' },
      decision: { type: 'string' },
      reason: { type: 'string' },
      sub: { type: 'string' },
      txn: { type: 'string' },
      limit: { type: 'string' },
      json: { type: 'boolean' },
      probes: { type: 'boolean' },
    },
  });
  if (positionals.length > 0) {
    const given = positionals.join(' ');
    throw new UsageError(`lockstep events takes no positional arguments (got ${given})\n${EVENTS_USAGE}`);
  }
  const parameters = queryParameters(values);
  const search = new URLSearchParams(parameters).toString();
  const answer = await admin('GET', search === '' ? EVENTS_PATH : `${EVENTS_PATH}?${search}`);
  const events = answer.events as AuditEvent[];
  if (values.json === true) {
    out(JSON.stringify(events, null, 2));
    return 0;
  }
  if (events.length === 0) {
    out(nothingMatched(parameters));
    return 0;
  }
  for (const line of eventLines(events)) out(line);
  return 0;
}

/** The query the options ask for, checked as the monitor checks it: a mistake is a usage error. */
function queryParameters(values: Readonly<Record<string, string | boolean | undefined>>): Record<string, string> {
  const parameters: Record<string, string> = {};
  for (const name of [...EVENT_FILTERS, 'limit'] as const) {
    const value = values[name];
    if (typeof value === 'string') parameters[name] = value;
  }
  if (values.probes === true) parameters.probes = 'true';
  try {
    parseEventQuery(parameters, (name) => `--${name}`);
  } catch (error) {
    if (error instanceof TypeError) throw new UsageError(`${error.message}\n${EVENTS_USAGE}`);
    throw error;
  }
  return parameters;
}

/** One line per event, columns aligned; `-` for an empty field; an allow has no reason. */
function eventLines(events: readonly AuditEvent[]): string[] {
  const rows = events.map((event) => {
    const decision = decisionOf(event);
    const reason = decision === 'allow' ? '-' : field(event.reason);
    return [
      field(event.time),
      field(event.service),
      decision,
      reason,
      field(event.action),
      `caller=${field(event.caller)}`,
      `sub=${field(event.sub)}`,
      `request=${field(event.requestId)}`,
    ];
  });
  const widths = rows.reduce(
    (most, row) => most.map((width, column) => Math.max(width, row[column]?.length ?? 0)),
    new Array<number>(8).fill(0),
  );
  // The last column is not padded: no trailing blanks.
  const last = widths.length - 1;
  const padded = (cell: string, column: number) => (column === last ? cell : cell.padEnd(widths[column] ?? 0));
  return rows.map((row) => row.map(padded).join('  '));
}

function field(value: unknown): string {
  return typeof value === 'string' && value !== '' ? value : '-';
}

/** What to say when nothing matched, and how to widen the search. */
function nothingMatched(parameters: Readonly<Record<string, string>>): string {
  const probes = parameters.probes === 'true';
  const filters = EVENT_FILTERS.filter((name) => parameters[name] !== undefined).map(
    (name) => `--${name} ${parameters[name]}`,
  );
  const what = probes ? 'probes' : 'events';
  const apart = probes ? '' : "; a scanner's probes are listed apart: add --probes";
  if (filters.length > 0) {
    return `no ${what} match ${filters.join(' ')}: drop or change a filter to widen the search${apart}`;
  }
  return probes
    ? 'no probes yet: no scanner has probed a guard (run lockstep scan)'
    : `no events yet: no guard has shipped a decision to the monitor${apart}`;
}
