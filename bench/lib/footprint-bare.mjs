// bench/footprint.ts's bare hello world: node:http, or node:https asking for client certificates when
// FOOTPRINT_TLS holds { cert, key, ca } (JSON). No Lockstep.
import { createServer as createHttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import process from 'node:process';
import { serveBench } from './footprint-child.mjs';

const hello = (_request, response) => response.end('hello');
const tls = process.env.FOOTPRINT_TLS === undefined ? null : JSON.parse(process.env.FOOTPRINT_TLS);
const server =
  tls === null
    ? createHttpServer(hello)
    : createHttpsServer({ ...tls, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' }, hello);
serveBench(server, () => new Promise((resolve) => server.close(resolve)));
