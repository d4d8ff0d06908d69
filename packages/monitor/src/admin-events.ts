/**
 * `GET /v1/admin/events?service&decision&reason&sub&txn&limit&probes` → `{ events: [...] }`: the newest
 * decisions the monitor holds, for administrators over mTLS — what `lockstep events` lists, and the
 * dashboard's events page shows to a signed-in administrator (recent-events.ts reads both).
 *
 * It is an admin endpoint like the control plane's own (`context.adminRoutes`): an administrator's
 * SVID only, and every call recorded in the audit trail (`admin:events.read`) before it runs, as the
 * admin API's other reads are. Parameters are checked strictly (`parseEventQuery`): a mistake is a
 * 400 that says what to send, never an answer that silently matches nothing.
 *
 * Guards' decisions only, unless `service=control-plane` asks for the control plane's own admin
 * actions (its source in the trail): every read here is one of them, and an operator who polls would
 * otherwise see nothing but their own reads.
 */
import { ControlPlaneError, controlPlaneSpiffeId, type ExtensionContext } from '@lockstep/control-plane';
import type { FastifyInstance } from 'fastify';
import { newestEvents, parseEventQuery, type EventQuery } from './recent-events.ts';

export const EVENTS_PATH = '/v1/admin/events';

/** The extension: `startControlPlane({ extensions: [serveAdminEvents] })`. */
export function serveAdminEvents(_app: FastifyInstance, context: ExtensionContext): void {
  const adminActions = controlPlaneSpiffeId(context.ca.trustDomain);
  context.adminRoutes({ [`GET ${EVENTS_PATH}`]: 'admin:events.read' }, (admin) => {
    admin.get(EVENTS_PATH, async (request, reply) => {
      const query = queryOf(request.query as Readonly<Record<string, unknown>>);
      const skipSources = query.filter.service === 'control-plane' ? [] : [adminActions];
      reply.header('cache-control', 'no-store');
      return { events: await newestEvents(context.store, { ...query, skipSources }) };
    });
  });
}

function queryOf(parameters: Readonly<Record<string, unknown>>): EventQuery {
  try {
    return parseEventQuery(parameters);
  } catch (error) {
    if (error instanceof TypeError) throw new ControlPlaneError('LOCKSTEP_CP_REQUEST_INVALID', error.message);
    throw error;
  }
}
