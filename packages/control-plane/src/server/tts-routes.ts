/**
 * The Txn-Token Service over HTTPS: `POST /v1/token` (RFC 8693, form-encoded, mTLS with the
 * requester's workload SVID, whose key also verifies a `self_signed` subject token) and
 * `GET /v1/txn-token/jwks.json` (public keys for the guards).
 * Errors are OAuth errors (RFC 6749 §5.2: `{ error, error_description }`, status 400).
 */
import { isIP } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { FastifyInstance } from 'fastify';
import type { WorkloadCa } from '../ca/workload-ca.ts';
import { ControlPlaneError } from '../errors.ts';
import { TokenExchangeError, type ExchangeRequest, type TxnTokenService } from '../tts/txn-token-service.ts';
import { admittedCaller, requireCaller } from './peer.ts';

const PARAMETERS = new Set([
  'grant_type',
  'requested_token_type',
  'audience',
  'subject_token',
  'subject_token_type',
  'scope',
  'request_context',
]);

export function registerTtsRoutes(app: FastifyInstance, ca: WorkloadCa, tts: TxnTokenService): void {
  app.get('/v1/txn-token/jwks.json', async () => tts.jwks);

  app.register(async (scope) => {
    // RFC 6749 §3.2: form-encoded, and no parameter twice.
    scope.addContentTypeParser(
      'application/x-www-form-urlencoded',
      { parseAs: 'string', bodyLimit: 32 * 1024 },
      (_request, body, done) => {
        const form = new URLSearchParams(body as string);
        const fields: Record<string, string> = {};
        for (const [name, value] of form) {
          if (!PARAMETERS.has(name))
            return done(
              new ControlPlaneError(
                'LOCKSTEP_CP_REQUEST_INVALID',
                `unknown parameter ${JSON.stringify(name.slice(0, 40))}`,
              ),
              undefined,
            );
          if (name in fields)
            return done(
              new ControlPlaneError('LOCKSTEP_CP_REQUEST_INVALID', `parameter ${name} given twice`),
              undefined,
            );
          fields[name] = value;
        }
        done(null, fields);
      },
    );

    scope.post<{ Body: ExchangeRequest & { request_context?: string } }>(
      '/v1/token',
      { onRequest: requireCaller(ca.trustDomain, ['workload']) },
      async (request, reply) => {
        if (typeof request.body !== 'object' || request.body === null)
          throw new ControlPlaneError('LOCKSTEP_CP_REQUEST_INVALID', 'send the parameters form-encoded');
        const requester = admittedCaller(request);
        let clientIp: string | undefined;
        if (request.body.request_context !== undefined) {
          let context: unknown;
          try {
            context = JSON.parse(request.body.request_context);
          } catch {
            return reply.code(400).send({ error: 'invalid_request', error_description: 'request_context is not JSON' });
          }
          const ip = (context as { req_ip?: unknown } | null)?.req_ip;
          if (ip !== undefined && (typeof ip !== 'string' || isIP(ip) === 0))
            return reply
              .code(400)
              .send({ error: 'invalid_request', error_description: 'request_context.req_ip is not an IP address' });
          clientIp = ip;
        }
        // The key of the SVID this connection presented: what a self_signed subject token must be signed with.
        const requesterKey = (request.raw.socket as TLSSocket).getPeerX509Certificate()?.publicKey;
        try {
          const issued = await tts.exchange(request.body, {
            requester,
            ...(requesterKey === undefined ? {} : { requesterKey }),
            ...(clientIp === undefined ? {} : { clientIp }),
          });
          return reply.header('cache-control', 'no-store').send(issued);
        } catch (error) {
          if (error instanceof TokenExchangeError)
            return reply
              .code(400)
              .header('cache-control', 'no-store')
              .send({ error: error.error, error_description: error.message });
          throw error;
        }
      },
    );
  });
}
