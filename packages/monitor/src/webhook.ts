/**
 * Alert delivery to a webhook: a JSON POST whose body is signed (HMAC-SHA256 over
 * "<timestamp>.<body>" with a shared secret, in `x-lockstep-signature: sha256=<hex>` with
 * `x-lockstep-timestamp`), retried with exponential backoff until the receiver answers 2xx.
 * Receivers check the signature and refuse old timestamps (replays).
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { request, type Dispatcher } from 'undici';
import type { AlertRecord } from '@lockstep/control-plane';

export interface WebhookOptions {
  readonly url: string;
  /** At least 32 characters. */
  readonly secret: string;
  /** Attempts in all (default 6: 0.5, 1, 2, 4, 8 s apart). */
  readonly attempts?: number;
  readonly backoffMs?: number;
  readonly dispatcher?: Dispatcher;
  /** After the last attempt failed. */
  readonly onFailure?: (alert: AlertRecord, error: Error) => void;
}

export interface Webhook {
  /** Resolves once delivered, or once every attempt failed (then `onFailure` was told). */
  deliver(alert: AlertRecord): Promise<boolean>;
}

export function signWebhookBody(secret: string, timestamp: string, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`;
}

/** For receivers: true when `signature` is ours for this timestamp and body, and the timestamp is recent. */
export function verifyWebhookSignature(
  secret: string,
  timestamp: string,
  body: string,
  signature: string,
  maxAgeMs = 5 * 60_000,
  now = Date.now(),
): boolean {
  if (!/^\d{10,16}$/.test(timestamp) || Math.abs(now - Number(timestamp)) > maxAgeMs) return false;
  const expected = Buffer.from(signWebhookBody(secret, timestamp, body));
  const actual = Buffer.from(signature);
  return expected.length === actual.length && timingSafeEqual(expected, actual);
}

export function createWebhook(options: WebhookOptions): Webhook {
  if (options.secret.length < 32) throw new TypeError('the webhook secret must be at least 32 characters');
  const url = new URL(options.url);
  if (url.protocol !== 'https:' && !['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname))
    throw new TypeError(`a webhook outside this machine must use https; got ${options.url}`);
  const attempts = options.attempts ?? 6;
  return {
    async deliver(alert) {
      const body = JSON.stringify({ alert: { ...alert, details: JSON.parse(alert.details) as unknown } });
      let lastError = new Error('not attempted');
      for (let attempt = 0; attempt < attempts; attempt += 1) {
        if (attempt > 0)
          await new Promise((resolve) => setTimeout(resolve, (options.backoffMs ?? 500) * 2 ** (attempt - 1)));
        const timestamp = String(Date.now());
        try {
          const response = await request(url, {
            method: 'POST',
            body,
            ...(options.dispatcher ? { dispatcher: options.dispatcher } : {}),
            headersTimeout: 10_000,
            bodyTimeout: 10_000,
            headers: {
              'content-type': 'application/json',
              'x-lockstep-timestamp': timestamp,
              'x-lockstep-signature': signWebhookBody(options.secret, timestamp, body),
              'x-lockstep-alert-id': alert.id,
            },
          });
          await response.body.dump();
          if (response.statusCode >= 200 && response.statusCode < 300) return true;
          lastError = new Error(`the webhook answered ${response.statusCode}`);
        } catch (error) {
          lastError = error as Error;
        }
      }
      options.onFailure?.(alert, lastError);
      return false;
    },
  };
}
