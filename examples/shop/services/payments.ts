/**
 * payments — charges a customer for an order. Secured with the guard's `node:http` adapter.
 * Policy (policies/payments.cedar): only `orders` may charge, only on behalf of a customer.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { lockstepHttp } from '@lockstep/guard/http';
import { log, onStop, ready, secure, settings } from './runtime.ts';

const Charge = z
  .object({ orderId: z.string().min(1).max(64), amount: z.number().int().min(1).max(1_000_000) })
  .strict();
const charges = new Map<string, { chargeId: string; orderId: string; amount: number; customer: string; at: string }>();

function charge(body: z.infer<typeof Charge>, customer: string) {
  const entry = {
    chargeId: randomUUID(),
    orderId: body.orderId,
    amount: body.amount,
    customer,
    at: new Date().toISOString(),
  };
  charges.set(entry.chargeId, entry);
  log('info', 'charged', { chargeId: entry.chargeId, orderId: entry.orderId, amount: entry.amount, customer });
  return { chargeId: entry.chargeId, status: 'captured', amount: entry.amount };
}

function json(response: ServerResponse, status: number, body: unknown): void {
  response.writeHead(status, { 'content-type': 'application/json; charset=utf-8' });
  response.end(JSON.stringify(body));
}

const config = settings();

if (config.mode === 'lockstep') {
  const { guard, agent } = await secure(config);
  const server = guard.createServer(
    lockstepHttp(
      guard,
      { 'GET /health': { public: true }, 'POST /charges': { action: 'payments:charge', body: Charge } },
      (_request, response, { body, admission }) => {
        // Dispatch on the route the guard matched, never on the raw URL (`/health?x=1` is /health).
        if (admission.route?.template === '/health') return json(response, 200, { ok: true });
        return json(response, 201, charge(body as z.infer<typeof Charge>, admission.txn?.claims.sub ?? ''));
      },
    ),
  );
  server.listen(config.port, '127.0.0.1', () => ready(`https://127.0.0.1:${config.port}`));
  onStop(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await agent.close();
    await guard.close();
  });
} else {
  // Perimeter-only ("before"): plain HTTP, whoever calls is believed; the user comes from a header.
  const server = createServer((request: IncomingMessage, response: ServerResponse) => {
    if (request.method === 'GET' && request.url === '/health') return json(response, 200, { ok: true });
    if (request.method !== 'POST' || request.url !== '/charges') return json(response, 404, { error: 'not found' });
    let text = '';
    request
      .setEncoding('utf8')
      .on('data', (chunk: string) => {
        text += chunk;
      })
      .on('end', () => {
        const parsed = Charge.safeParse(
          (() => {
            try {
              return JSON.parse(text);
            } catch {
              return null;
            }
          })(),
        );
        if (!parsed.success) return json(response, 400, { error: 'invalid charge' });
        return json(response, 201, charge(parsed.data, String(request.headers['x-user'] ?? 'unknown')));
      });
  });
  server.listen(config.port, '127.0.0.1', () => ready(`http://127.0.0.1:${config.port}`));
  onStop(() => new Promise<void>((resolve) => server.close(() => resolve())));
}
