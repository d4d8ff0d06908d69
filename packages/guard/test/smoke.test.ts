import { test } from 'node:test';
import assert from 'node:assert/strict';
import { adapters, guardFor, startOrders, world } from './fixture.ts';

for (const adapter of adapters) {
  test(`${adapter}: a customer's order through the gateway is allowed`, async () => {
    const w = await world();
    const service = await startOrders(adapter, await guardFor(w));
    const client = w.client(w.svids.gateway);
    try {
      const token = await w.customerToken();
      const res = await client.request(`${service.url}/orders/42`, { headers: { 'txn-token': token } });
      assert.equal(res.status, 200, res.text);
      assert.equal(res.json<{ id: string }>().id, '42');
    } finally {
      await client.close();
      await service.close();
      await service.guard.close();
    }
  });
}
