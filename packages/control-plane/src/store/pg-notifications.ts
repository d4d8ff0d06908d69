/**
 * One LISTEN connection per PostgreSQL store, shared by every channel it watches (revocations, key
 * documents): a replica holds one extra connection, not one per feature. When the connection breaks (a
 * database restart, a failover, a network cut) it is opened again, retried with backoff up to 5 s, and
 * every listener of every channel is called with null once it listens again, so that what was written
 * meanwhile is read at once rather than at the next re-read.
 */
import pg from 'pg';
import { SQL_IDENTIFIER } from './store.ts';

type Listener = (payload: string | null) => void;

export interface PgNotifications {
  /**
   * Calls `listener` with each notification's payload on `channel` (a plain SQL identifier). Resolves once
   * the channel is listened to, or at once while the connection is down and being opened again (the
   * listener is then called with null when it is back); rejects when the connection it waits for cannot be
   * opened.
   */
  listen(channel: string, listener: Listener): Promise<() => Promise<void>>;
  /** Ends the connection; listeners are never called again. */
  close(): Promise<void>;
}

/** `applicationName` names the connection in `pg_stat_activity`, e.g. `lockstep-listen-<schema>`. */
export function pgNotifications(connectionString: string, applicationName: string): PgNotifications {
  const listeners = new Map<string, Set<Listener>>();
  let client: pg.Client | null = null;
  let connecting: Promise<void> | null = null;
  let retry: NodeJS.Timeout | undefined;
  let closed = false;

  const each = (channel: string | null, payload: string | null): void => {
    for (const [name, set] of listeners) {
      if (channel !== null && name !== channel) continue;
      for (const listener of set) listener(payload);
    }
  };

  /** Opens a connection that listens to every channel that has listeners now. */
  const connect = async (): Promise<void> => {
    const next = new pg.Client({ connectionString, application_name: applicationName });
    next.on('notification', (message) => each(message.channel, message.payload ?? null));
    next.on('error', () => {}); // 'end' follows: reconnected there
    next.once('end', () => {
      if (client !== next) return;
      client = null;
      if (!closed && listeners.size > 0) reconnect(250);
    });
    try {
      await next.connect();
      for (const channel of listeners.keys()) await next.query(`LISTEN ${channel}`);
    } catch (error) {
      await next.end().catch(() => {});
      throw error;
    }
    if (closed || listeners.size === 0) await next.end().catch(() => {});
    else client = next;
  };

  const reconnect = (delayMs: number): void => {
    retry = setTimeout(() => {
      retry = undefined;
      connecting = connect();
      connecting.then(
        () => {
          connecting = null;
          if (client !== null) each(null, null);
        },
        () => {
          connecting = null;
          if (!closed && listeners.size > 0) reconnect(Math.min(delayMs * 2, 5_000));
        },
      );
    }, delayMs);
    retry.unref();
  };

  // Read through a call: after an await, `client` may have changed (TypeScript would keep it narrowed).
  const listening = (): pg.Client | null => client;

  const stop = async (): Promise<void> => {
    clearTimeout(retry);
    retry = undefined;
    const current = client;
    client = null;
    await current?.end().catch(() => {});
  };

  const remove = async (channel: string, listener: Listener): Promise<void> => {
    const set = listeners.get(channel);
    if (set === undefined || !set.delete(listener) || set.size > 0) return;
    listeners.delete(channel);
    if (listeners.size === 0) await stop();
    else await client?.query(`UNLISTEN ${channel}`).catch(() => {});
  };

  return {
    async listen(channel, listener) {
      if (!SQL_IDENTIFIER.test(channel))
        throw new TypeError(`a notification channel is a plain SQL identifier; got ${JSON.stringify(channel)}`);
      if (closed) throw new Error('the notification connection is closed');
      let set = listeners.get(channel);
      if (set === undefined) listeners.set(channel, (set = new Set()));
      set.add(listener);
      try {
        if (client !== null) await client.query(`LISTEN ${channel}`);
        else if (connecting !== null) {
          // Someone else's connection attempt: it listens to this channel too (it lists the channels as it
          // listens); once it is up, listening again costs nothing.
          await connecting;
          await listening()?.query(`LISTEN ${channel}`);
        } else if (retry === undefined) {
          connecting = connect();
          try {
            await connecting;
          } finally {
            connecting = null;
          }
        }
      } catch (error) {
        await remove(channel, listener);
        throw error;
      }
      return () => remove(channel, listener);
    },
    async close() {
      closed = true;
      listeners.clear();
      await stop();
    },
  };
}
