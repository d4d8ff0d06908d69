/**
 * One GET through undici's dispatch API, for the load generators: no body stream object per request,
 * the body kept (300 characters) only for an answer other than 200. A failure rejects.
 *
 *   const { status, body } = await dispatchGet(pool, { origin, path, headers, headersTimeout: 10_000, bodyTimeout: 10_000 });
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { Dispatcher } from 'undici';

export interface Outcome {
  readonly status: number;
  readonly body: string;
}

export function dispatchGet(
  dispatcher: Pick<Dispatcher, 'dispatch'>,
  options: Omit<Dispatcher.DispatchOptions, 'method'>,
): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    let status = 0;
    const chunks: Buffer[] = [];
    const handler: Dispatcher.DispatchHandler = {
      // undici only treats a handler as new-style when it has onRequestStart.
      onRequestStart() {},
      onResponseStart(_controller, statusCode: number, _headers: IncomingHttpHeaders) {
        status = statusCode;
      },
      onResponseData(_controller, chunk: Buffer) {
        if (status !== 200) chunks.push(chunk);
      },
      onResponseEnd() {
        resolve({ status, body: chunks.length > 0 ? Buffer.concat(chunks).toString('utf8').slice(0, 300) : '' });
      },
      onResponseError(_controller, error: Error) {
        reject(error);
      },
    };
    dispatcher.dispatch({ ...options, method: 'GET' }, handler);
  });
}

/** A number from the environment within [min, max], or `fallback`; otherwise an error naming the variable and an example. */
export function envNumber(name: string, fallback: number, min: number, max: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < min || value > max)
    throw new TypeError(
      `${name} must be a number between ${min} and ${max}, e.g. ${name}=${fallback}; got ${JSON.stringify(raw)}`,
    );
  return value;
}
