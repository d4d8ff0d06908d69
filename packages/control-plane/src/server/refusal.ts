/** How the server answers a ControlPlaneError, and remembers its code for the admin audit event. */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { ControlPlaneError } from '../errors.ts';

const kRefusal = Symbol('lockstep.refusal');

export function refuse(reply: FastifyReply, error: ControlPlaneError): FastifyReply {
  (reply.request as unknown as Record<symbol, string>)[kRefusal] = error.code;
  return reply.code(error.status).send({ error: error.code, message: error.message });
}

export function refusalCode(request: FastifyRequest): string | undefined {
  return (request as unknown as Record<symbol, string | undefined>)[kRefusal];
}
