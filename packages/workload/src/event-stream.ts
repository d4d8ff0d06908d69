/**
 * A server-sent events client on `undici.request` (so the caller's mTLS dispatcher is used) and
 * eventsource-parser. undici's own EventSource is experimental and prints a warning into the log of
 * every service that uses it.
 *
 * One loop: connect (with Last-Event-ID), read events until the response ends, fails or stays silent
 * for `silenceMs`, wait, connect again — until `signal` aborts. The wait is the server's `retry:`
 * (1 s until it sends one), doubled on each failed attempt up to 30 s, with jitter so that a fleet
 * does not come back at once after a restart; it starts over once a stream opens.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { createParser, type EventSourceMessage } from 'eventsource-parser';
import { request, type Dispatcher } from 'undici';

export interface EventStreamOptions {
  readonly dispatcher: Dispatcher;
  /** Ends the stream: the request in flight, or the wait before the next one, is aborted at once. */
  readonly signal: AbortSignal;
  /** A response that sends nothing (not even a comment) for this long is taken as dead. */
  readonly silenceMs: number;
  /** The Last-Event-ID to send on each connection; null sends none. */
  readonly lastEventId: () => string | null;
  /** A 200 `text/event-stream` answer: the stream is open. */
  readonly onOpen: () => void;
  /** Each event; a throw ends this connection like a network error would. */
  readonly onMessage: (message: EventSourceMessage) => void;
  /** The stream is down (refused, failed, ended or silent) and is tried again in `retryInMs`. */
  readonly onDown: (reason: string, retryInMs: number) => void;
}

const FIRST_RETRY_MS = 1_000;
const MIN_RETRY_MS = 100;
const MAX_RETRY_MS = 30_000;
const CONNECT_TIMEOUT_MS = 10_000;

/** Follows the event stream at `url` until `options.signal` aborts; never rejects on its own failures. */
export async function followEventStream(url: URL, options: EventStreamOptions): Promise<void> {
  const { signal } = options;
  let retryMs = FIRST_RETRY_MS;
  let failures = 0;
  while (!signal.aborted) {
    let reason: string;
    try {
      const lastEventId = options.lastEventId();
      const response = await request(url, {
        dispatcher: options.dispatcher,
        signal,
        headersTimeout: CONNECT_TIMEOUT_MS,
        bodyTimeout: options.silenceMs,
        headers: {
          accept: 'text/event-stream',
          'cache-control': 'no-store',
          ...(lastEventId === null ? {} : { 'last-event-id': lastEventId }),
        },
      });
      const type = String(response.headers['content-type'] ?? 'no content-type');
      if (response.statusCode !== 200 || !type.startsWith('text/event-stream')) {
        const body = (await response.body.text()).slice(0, 300);
        reason = `GET ${url.pathname} answered ${response.statusCode} (${type}): ${body}`;
      } else {
        failures = 0;
        options.onOpen();
        const parser = createParser({
          onEvent: options.onMessage,
          onRetry: (ms) => {
            retryMs = Math.min(Math.max(ms, MIN_RETRY_MS), MAX_RETRY_MS);
          },
        });
        // undici's body yields Buffers even after setEncoding: decode here, keeping split characters whole.
        const decoder = new TextDecoder();
        for await (const chunk of response.body) parser.feed(decoder.decode(chunk as Buffer, { stream: true }));
        reason = 'the server ended the stream';
      }
    } catch (error) {
      reason =
        (error as { code?: unknown }).code === 'UND_ERR_BODY_TIMEOUT'
          ? `nothing received for ${options.silenceMs / 1_000} s`
          : (error as Error).message;
    }
    if (signal.aborted) return;
    const backoff = Math.min(MAX_RETRY_MS, retryMs * 2 ** failures);
    const wait = Math.round(backoff / 2 + (Math.random() * backoff) / 2);
    failures += 1;
    options.onDown(reason, wait);
    // Unreferenced: a stream that is only waiting does not keep the process alive, as the poll timer does not.
    await sleep(wait, undefined, { signal, ref: false }).catch(() => {});
  }
}
