/**
 * A server-sent events client on `undici.request` (so the caller's mTLS dispatcher is used) and
 * eventsource-parser. undici's own EventSource is experimental and prints a warning into the log of
 * every service that uses it.
 *
 * One loop: connect (with Last-Event-ID) to an endpoint, read events until the response ends, fails
 * or stays silent for `silenceMs`, then connect again — until `signal` aborts. Event ids are valid on
 * every replica, so the next connection resumes wherever it goes.
 *
 * Which endpoint, and when: after a failure, an endpoint not yet tried in this round is tried at once
 * (0–100 ms of jitter): a replica that died loses its streams to the others within about 100 ms. Once
 * every endpoint failed (with one endpoint: after each failure), the round waits: the server's
 * `retry:` (1 s until it sends one), doubled on each failed round up to 30 s, with jitter so that a
 * fleet does not come back at once after a restart; it starts over once a stream opens. A refusal
 * (401, 403, any 4xx) is the control plane's answer, which every replica would give: it ends the
 * round without marking the endpoint down.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { isFailover, type ControlPlaneEndpoints } from '@lockstep/identity';
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
  /** A 200 `text/event-stream` answer from the endpoint `baseUrl`: the stream is open. */
  readonly onOpen: (baseUrl: string) => void;
  /** Each event; a throw ends this connection like a network error would. */
  readonly onMessage: (message: EventSourceMessage) => void;
  /** The stream at `baseUrl` is down (refused, failed, ended or silent) and is tried again in `retryInMs`. */
  readonly onDown: (reason: string, retryInMs: number, baseUrl: string) => void;
}

const FIRST_RETRY_MS = 1_000;
const MIN_RETRY_MS = 100;
const MAX_RETRY_MS = 30_000;
/** The most a move to another endpoint waits: enough to spread a fleet, short enough to be on time. */
const NEXT_ENDPOINT_JITTER_MS = 100;
const CONNECT_TIMEOUT_MS = 10_000;
/** With another endpoint to go to, a replica that accepts and does not answer is left sooner. */
const CONNECT_TIMEOUT_WITH_REPLICAS_MS = 5_000;

/**
 * Follows the event stream at `path` of `endpoints` until `options.signal` aborts; never rejects on its
 * own failures. Each endpoint is told how it went (`ok` when a stream opens, `failed` on an outage).
 */
export async function followEventStream(
  endpoints: ControlPlaneEndpoints,
  path: string,
  options: EventStreamOptions,
): Promise<void> {
  const { signal } = options;
  const headersTimeout = endpoints.urls.length > 1 ? CONNECT_TIMEOUT_WITH_REPLICAS_MS : CONNECT_TIMEOUT_MS;
  let retryMs = FIRST_RETRY_MS;
  let failedRounds = 0;
  // The endpoints tried since the last stream opened, or the last round ended.
  const tried = new Set<string>();
  while (!signal.aborted) {
    const order = endpoints.order();
    const base = order.find((url) => !tried.has(url)) ?? (order[0] as string);
    tried.add(base);
    const url = new URL(path, base);
    let reason: string;
    // Whether the endpoint failed (no answer, an outage, a dropped stream) rather than answered.
    let outage = true;
    try {
      const lastEventId = options.lastEventId();
      const response = await request(url, {
        dispatcher: options.dispatcher,
        signal,
        headersTimeout,
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
        // A 200 that is no event stream is not the control plane's answer (a proxy's page).
        outage = response.statusCode === 200 || isFailover(response.statusCode);
      } else {
        failedRounds = 0;
        tried.clear();
        tried.add(base);
        endpoints.ok(base);
        options.onOpen(base);
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
    if (outage) endpoints.failed(base);
    let wait: number;
    if (outage && endpoints.urls.some((other) => !tried.has(other))) {
      wait = Math.round(Math.random() * NEXT_ENDPOINT_JITTER_MS);
    } else {
      // The round is over: every endpoint failed, or one answered with a refusal.
      const backoff = Math.min(MAX_RETRY_MS, retryMs * 2 ** failedRounds);
      wait = Math.round(backoff / 2 + (Math.random() * backoff) / 2);
      failedRounds += 1;
      tried.clear();
    }
    options.onDown(reason, wait, base);
    // Unreferenced: a stream that is only waiting does not keep the process alive, as the poll timer does not.
    await sleep(wait, undefined, { signal, ref: false }).catch(() => {});
  }
}
