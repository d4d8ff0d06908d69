import { Agent, request as undiciRequest } from 'undici';
import type { Dispatcher } from 'undici';

export interface MtlsClientOptions {
  /** The client certificate: pass an SVID's chainPem so an intermediate travels with it. */
  readonly certPem: string;
  readonly keyPem: string;
  /** The trust bundle the server's certificate must chain to. */
  readonly caPem: string;
}

export interface MtlsRequestOptions {
  readonly method?: Dispatcher.HttpMethod;
  /**
   * A record, or a flat array of name/value pairs: ['txn-token', a, 'txn-token', b] sends the
   * header twice, on two lines (a record with an array value does the same).
   */
  readonly headers?: Readonly<Record<string, string | readonly string[]>> | readonly string[];
  readonly body?: string | Uint8Array;
}

export interface MtlsResponse {
  readonly status: number;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly text: string;
  /** The body parsed as JSON; throws a SyntaxError when it is not JSON. */
  json<T = unknown>(): T;
}

export interface MtlsClient {
  request(url: string | URL, options?: MtlsRequestOptions): Promise<MtlsResponse>;
  close(): Promise<void>;
}

/**
 * An HTTPS client that presents a client certificate and trusts only the given bundle. The
 * server's chain is verified; its host name is not, because SVIDs carry a SPIFFE URI, not DNS names.
 */
export function createMtlsClient(options: MtlsClientOptions): MtlsClient {
  const agent = new Agent({
    connect: {
      cert: options.certPem,
      key: options.keyPem,
      ca: options.caPem,
      rejectUnauthorized: true,
      checkServerIdentity: () => undefined,
    },
  });

  async function request(url: string | URL, requestOptions: MtlsRequestOptions = {}): Promise<MtlsResponse> {
    const response = await undiciRequest(url, {
      dispatcher: agent,
      method: requestOptions.method ?? 'GET',
      headers: toUndiciHeaders(requestOptions.headers),
      body: requestOptions.body ?? null,
    });
    const text = await response.body.text();
    return { status: response.statusCode, headers: response.headers, text, json: <T>() => JSON.parse(text) as T };
  }

  return Object.freeze({ request, close: () => agent.close() });
}

function toUndiciHeaders(
  headers: MtlsRequestOptions['headers'],
): Exclude<Dispatcher.RequestOptions['headers'], undefined> {
  if (headers === undefined) return null;
  if (isFlatArray(headers)) {
    if (headers.length % 2 !== 0)
      throw new TypeError('headers as an array must be name/value pairs: [name, value, name, value, …]');
    return [...headers];
  }
  return Object.fromEntries(
    Object.entries(headers).map(([name, value]) => [name, typeof value === 'string' ? value : [...value]]),
  );
}

function isFlatArray(headers: NonNullable<MtlsRequestOptions['headers']>): headers is readonly string[] {
  return Array.isArray(headers);
}
