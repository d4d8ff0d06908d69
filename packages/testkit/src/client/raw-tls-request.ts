import tls from 'node:tls';

export interface RawTlsRequestOptions {
  readonly host: string;
  readonly port: number;
  /** Leave out the certificate to connect without one. */
  readonly certPem?: string;
  readonly keyPem?: string;
  readonly caPem: string;
  /** Bytes written as they are once the handshake is done: malformed HTTP on purpose. */
  readonly raw: string | Uint8Array;
  /** Give up waiting after this much silence (default 2000 ms); what arrived so far is the answer. */
  readonly idleTimeoutMs?: number;
}

/** The raw response text, or the error code when nothing came back (handshake refused, reset…). */
export type RawTlsResult = string | { readonly error: string };

/**
 * Writes raw bytes over a TLS connection and collects whatever the server sends until it closes
 * or goes quiet. Send `Connection: close` to get an answer without waiting for the idle timeout.
 */
export function rawTlsRequest(options: RawTlsRequestOptions): Promise<RawTlsResult> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let settled = false;
    const socket = tls.connect({
      host: options.host,
      port: options.port,
      ca: options.caPem,
      ...(options.certPem === undefined ? {} : { cert: options.certPem }),
      ...(options.keyPem === undefined ? {} : { key: options.keyPem }),
      rejectUnauthorized: true,
      checkServerIdentity: () => undefined,
    });
    const finish = (error?: string) => {
      if (settled) return;
      settled = true;
      socket.destroy();
      if (chunks.length > 0) resolve(Buffer.concat(chunks).toString('latin1'));
      else resolve({ error: error ?? 'ERR_NO_RESPONSE' });
    };
    socket.setTimeout(options.idleTimeoutMs ?? 2000);
    socket.once('secureConnect', () => socket.write(options.raw));
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.once('end', () => finish());
    socket.once('close', () => finish());
    socket.once('timeout', () => finish('ETIMEDOUT'));
    socket.once('error', (error: NodeJS.ErrnoException) => finish(error.code ?? error.message));
  });
}
