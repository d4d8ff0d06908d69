/**
 * inventory — the catalogue and stock reservations. Secured with the guard's Express adapter.
 * Policy (policies/inventory.cedar): the gateway may browse for a signed-in user; only orders may
 * reserve, for a customer's transaction that started at the gateway.
 */
import express, { type Request, type Response } from 'express';
import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { lockstepExpress } from '@lockstep/guard/express';
import { log, onStop, ready, secure, settings } from './runtime.ts';

const CATALOGUE = [
  { item: 'tea', name: 'Green tea, 100 g', price: 650 },
  { item: 'coffee', name: 'Coffee beans, 250 g', price: 890 },
  { item: 'cocoa', name: 'Cocoa powder, 200 g', price: 420 },
];
const stock = new Map(CATALOGUE.map((entry) => [entry.item, 100]));
const Reservation = z
  .object({ item: z.enum(['tea', 'coffee', 'cocoa']), quantity: z.number().int().min(1).max(10) })
  .strict();

const config = settings();
const app = express();
app.disable('x-powered-by');

let close: () => Promise<void> = async () => {};
let url: string;
if (config.mode === 'lockstep') {
  const { guard, agent } = await secure(config);
  app.use(
    lockstepExpress(guard, {
      'GET /health': { public: true },
      'GET /items': { action: 'inventory:browse' },
      'POST /reservations': { action: 'inventory:reserve', body: Reservation },
    }),
  );
  const server = guard.createServer(app);
  await new Promise<void>((resolve) => server.listen(config.port, '127.0.0.1', resolve));
  url = `https://127.0.0.1:${config.port}`;
  close = async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await agent.close();
    await guard.close();
  };
} else {
  app.use(express.json({ limit: '16kb' }));
  const server = app.listen(config.port, '127.0.0.1');
  await new Promise<void>((resolve) => server.once('listening', resolve));
  url = `http://127.0.0.1:${config.port}`;
  close = () => new Promise<void>((resolve) => server.close(() => resolve()));
}

app.get('/health', (_request: Request, response: Response) => {
  response.json({ ok: true });
});
app.get('/items', (_request: Request, response: Response) => {
  response.json({ items: CATALOGUE.map((entry) => ({ ...entry, inStock: stock.get(entry.item) ?? 0 })) });
});
app.post('/reservations', (request: Request, response: Response) => {
  const parsed = Reservation.safeParse(request.body);
  if (!parsed.success) {
    response.status(400).json({ error: 'invalid reservation' });
    return;
  }
  const { item, quantity } = parsed.data;
  const left = stock.get(item) ?? 0;
  if (left < quantity) {
    response.status(409).json({ error: 'OUT_OF_STOCK', item, left });
    return;
  }
  stock.set(item, left - quantity);
  const price = CATALOGUE.find((entry) => entry.item === item)?.price ?? 0;
  const reservation = { reservationId: randomUUID(), item, quantity, amount: price * quantity };
  log('info', 'reserved', reservation);
  response.status(201).json(reservation);
});

ready(url);
onStop(close);
