/**
 * orders — places orders (a shipping quote from shipping, the Python service behind its sidecar;
 * reserving stock at inventory; charging at payments: one transaction, one `txn` across every hop) and
 * lets customers read their own. Secured with the guard's Fastify plugin.
 * Policy (policies/orders.cedar): the gateway on behalf of a customer; reading one order is allowed
 * only to the customer who placed it — decided in Cedar from the route's owner lookup.
 */
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import Fastify, { type FastifyInstance, type FastifyReply } from 'fastify';
import { request as plainRequest } from 'undici';
import { currentAdmission, type Guard } from '@lockstep/guard';
import { lockstep } from '@lockstep/guard/fastify';
import { log, onStop, ready, secure, settings } from './runtime.ts';

const config = settings();
const db = new DatabaseSync(join(config.dataDir, 'orders.db'));
db.exec(`PRAGMA journal_mode = WAL;
  CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, customer TEXT NOT NULL, item TEXT NOT NULL, quantity INTEGER NOT NULL,
    amount INTEGER NOT NULL, charge_id TEXT NOT NULL, txn TEXT, created_at TEXT NOT NULL, shipping TEXT)`);
// A database of a run before shipping quotes existed gets the column; its orders have no quote.
if (!(db.prepare('PRAGMA table_info(orders)').all() as { name: string }[]).some((column) => column.name === 'shipping'))
  db.exec('ALTER TABLE orders ADD COLUMN shipping TEXT');
const insert = db.prepare(
  'INSERT INTO orders (id, customer, item, quantity, amount, charge_id, txn, created_at, shipping) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
);
const byId = db.prepare('SELECT * FROM orders WHERE id = ?');
const byCustomer = db.prepare('SELECT * FROM orders WHERE customer = ? ORDER BY created_at DESC LIMIT 100');
const ownerOf = db.prepare('SELECT customer FROM orders WHERE id = ?');

// Demo data (SHOP_DEMO_ORDERS, set by the launcher): one order per demo customer, id `demo-<name>`, kept across restarts.
const seed = db.prepare(
  'INSERT OR IGNORE INTO orders (id, customer, item, quantity, amount, charge_id, txn, created_at) VALUES (?, ?, ?, ?, ?, ?, NULL, ?)',
);
for (const customer of (process.env.SHOP_DEMO_ORDERS ?? '').split(',').filter(Boolean)) {
  seed.run(`demo-${customer}`, customer, 'tea', 1, 650, 'demo (not charged)', new Date().toISOString());
}

type Row = Record<string, unknown>;
const view = (row: Row) => ({
  orderId: row.id,
  customer: row.customer,
  item: row.item,
  quantity: row.quantity,
  amount: row.amount,
  chargeId: row.charge_id,
  shipping: typeof row.shipping === 'string' ? (JSON.parse(row.shipping) as unknown) : null,
  createdAt: row.created_at,
});

class Downstream extends Error {
  readonly status: number;
  readonly body: Record<string, unknown>;
  constructor(status: number, body: Record<string, unknown>) {
    super(`downstream answered ${status}`);
    this.status = status;
    this.body = body;
  }
}

let guard: Guard | null = null;

/** A call to another shop service: over mTLS with the Txn-Token propagated (lockstep), or plain HTTP trusting a header (perimeter-only). */
async function call(
  service: 'inventory' | 'payments' | 'shipping',
  path: string,
  body: unknown,
  user: string,
): Promise<Record<string, unknown>> {
  const url = `${config.urls[service]}${path}`;
  const init = {
    method: 'POST' as const,
    headers: { 'content-type': 'application/json' } as Record<string, string>,
    body: JSON.stringify(body),
  };
  let response;
  try {
    response =
      guard !== null
        ? await guard.client.request(url, init)
        : await plainRequest(url, { ...init, headers: { ...init.headers, 'x-user': user } });
  } catch (error) {
    throw new Downstream(503, { error: 'DOWNSTREAM_UNAVAILABLE', service, detail: (error as Error).message });
  }
  const answer = (await response.body.json().catch(() => ({}))) as Record<string, unknown>;
  if (response.statusCode >= 300)
    throw new Downstream(response.statusCode === 409 ? 409 : 502, {
      error: response.statusCode === 409 ? 'OUT_OF_STOCK' : 'DOWNSTREAM_REFUSED',
      service,
      status: response.statusCode,
      ...(response.statusCode === 409 ? answer : {}),
    });
  return answer;
}

const Order = {
  type: 'object',
  additionalProperties: false,
  required: ['item', 'quantity'],
  properties: {
    item: { type: 'string', enum: ['tea', 'coffee', 'cocoa'] },
    quantity: { type: 'integer', minimum: 1, maximum: 10 },
  },
} as const;

let stopAgent = async () => {};
if (config.mode === 'lockstep') {
  const secured = await secure(config);
  guard = secured.guard;
  stopAgent = async () => {
    await secured.agent.close();
    await secured.guard.close();
  };
}
// One Fastify instance either way: HTTPS with the guard's TLS options, or plain HTTP in perimeter-only mode.
const server = (guard === null
  ? Fastify({ logger: false })
  : Fastify({ logger: false, https: guard.tlsOptions() })) as unknown as FastifyInstance;
if (guard !== null) await server.register(lockstep, { guard });

/** Who the order is for: the Txn-Token's subject (lockstep), or a header the caller sets (perimeter-only). */
const customerOf = (headers: Record<string, unknown>) =>
  guard !== null ? (currentAdmission()?.txn?.claims.sub ?? '') : String(headers['x-user'] ?? '');

const fail = (reply: FastifyReply, error: unknown) => {
  if (error instanceof Downstream)
    return reply.code(error.status).send({ ...error.body, requestId: currentAdmission()?.requestId ?? randomUUID() });
  throw error;
};

server.get('/health', { config: { lockstep: { public: true } } }, async () => ({ ok: true }));

server.post(
  '/orders',
  { config: { lockstep: { action: 'orders:create' } }, schema: { body: Order } },
  async (request, reply) => {
    const { item, quantity } = request.body as { item: string; quantity: number };
    const customer = customerOf(request.headers);
    const orderId = randomUUID();
    try {
      // The quote first: it changes nothing, so an order that cannot be shipped reserves and charges nothing.
      const quote = await call('shipping', '/quotes', { item, quantity }, customer);
      const shipping = {
        quoteId: String(quote.quoteId),
        carrier: String(quote.carrier),
        etaDays: Number(quote.etaDays),
        price: Number(quote.price),
      };
      const reservation = await call('inventory', '/reservations', { item, quantity }, customer);
      const charge = await call('payments', '/charges', { orderId, amount: Number(reservation.amount) }, customer);
      const txn = currentAdmission()?.txn?.claims.txn ?? null;
      insert.run(
        orderId,
        customer,
        item,
        quantity,
        Number(reservation.amount),
        String(charge.chargeId),
        typeof txn === 'string' ? txn : null,
        new Date().toISOString(),
        JSON.stringify(shipping),
      );
      log('info', 'order placed', { orderId, customer, item, quantity, txn, carrier: shipping.carrier });
      return reply.code(201).send(view(byId.get(orderId) as Row));
    } catch (error) {
      return fail(reply, error);
    }
  },
);

server.get('/orders', { config: { lockstep: { action: 'orders:list' } } }, async (request) => ({
  orders: (byCustomer.all(customerOf(request.headers)) as Row[]).map(view),
}));

server.get(
  '/orders/:id',
  {
    // Object-level authorization: the policy compares the order's owner with the user (orders.cedar).
    config: {
      lockstep: {
        action: 'orders:read',
        owner: ({ id }) => (ownerOf.get(id ?? '') as { customer?: string } | undefined)?.customer ?? null,
      },
    },
    schema: { params: { type: 'object', properties: { id: { type: 'string', maxLength: 64 } } } },
  },
  async (request, reply) => {
    const row = byId.get((request.params as { id: string }).id) as Row | undefined;
    return row === undefined ? reply.code(404).send({ error: 'NOT_FOUND' }) : view(row);
  },
);

await server.listen({ host: '127.0.0.1', port: config.port });
ready(`${guard === null ? 'http' : 'https'}://127.0.0.1:${config.port}`);
onStop(async () => {
  await server.close();
  await stopAgent();
  db.close();
});
