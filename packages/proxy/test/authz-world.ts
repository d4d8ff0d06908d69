/**
 * The world the decision service's tests run in: a real control plane (workload CA, SQLite store in memory,
 * the guard example's Cedar policies, signed), a Txn-Token minter, three enrolled workloads — `edge` (the
 * proxy that asks), `gateway` (the client the policy lets read orders) and `payments` (one it does not) — a
 * customer's Txn-Token for alice through the gateway, and the decision service for `orders` joined to it.
 * Every decision made meanwhile is recorded, to be looked up by request id.
 *
 *   const world = await startAuthzWorld('lockstep-authz-grpc-');
 *   const authz = await world.startOrdersAuthz({ routes, trustedProxies: [world.edge.spiffeId] });
 *   // … ask authz.url as world.edge about world.gateway with world.customerToken …
 *   world.lastDecision(answer.headers['lockstep-request-id']); // its audit event
 *   await world.close(); // the decision service, the control plane, the store, the scratch directory
 */
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { subscribeDecisions, type DecisionEvent } from '@lockstep/guard';
import { createTxnTokenMinter, type TxnTokenMinter } from '@lockstep/testkit';
import {
  createJoinToken,
  createPolicyService,
  openSigningKey,
  openSqliteStore,
  openWorkloadCa,
  startControlPlane,
  type ControlPlaneStore,
  type RunningControlPlane,
  type WorkloadCa,
} from '@lockstep/control-plane';
import { joinControlPlane, type WorkloadCredentials } from '@lockstep/workload';
import { createAuthzServer, type AuthzServer, type AuthzServerOptions } from '../src/authz/index.ts';

export const TD = 'shop.test';

/** What a test chooses of the decision service; the rest (orders, joined here, the minter's keys) is the world's. */
export type OrdersAuthzOptions = Pick<AuthzServerOptions, 'routes' | 'trustedProxies' | 'authzenCallers' | 'grpc'>;

export interface AuthzWorld {
  /** A scratch directory of the test's own, removed by `close()`. */
  readonly scratch: string;
  readonly ca: WorkloadCa;
  readonly store: ControlPlaneStore;
  readonly controlPlane: RunningControlPlane;
  readonly minter: TxnTokenMinter;
  readonly edge: WorkloadCredentials;
  readonly gateway: WorkloadCredentials;
  readonly payments: WorkloadCredentials;
  /** alice, role customer, requested through the gateway. */
  readonly customerToken: string;
  /** The last decision event (`lockstep:guard:decision`) for `requestId`; fails the test when there is none. */
  lastDecision(requestId: string | string[] | undefined): DecisionEvent;
  /** Joins `service` to the control plane with a fresh join token, as its workload agent would. */
  enrol(service: string): Promise<WorkloadCredentials>;
  /** Starts the decision service for orders and waits (up to 5 s) until it holds orders' policy slice. */
  startOrdersAuthz(options: OrdersAuthzOptions): Promise<AuthzServer>;
  /** Stops recording decisions; closes the decision services started here, the control plane, its store. */
  close(): Promise<void>;
}

export async function startAuthzWorld(scratchPrefix: string): Promise<AuthzWorld> {
  const scratch = mkdtempSync(join(tmpdir(), scratchPrefix));
  const policyDir = join(scratch, 'policies');
  cpSync(new URL('../../guard/example/policies/', import.meta.url), policyDir, { recursive: true });
  const ca = await openWorkloadCa({ trustDomain: TD, keyDir: join(scratch, 'keys') });
  const store = openSqliteStore(':memory:');
  const policyKey = await openSigningKey(join(scratch, 'keys'), 'policy');
  const policy = await createPolicyService({ dir: policyDir, signingKey: policyKey, watch: false });
  const controlPlane = await startControlPlane({ ca, store, policy });
  const minter = await createTxnTokenMinter({ trustDomain: TD });
  const decisions: DecisionEvent[] = [];
  const unsubscribe = subscribeDecisions((event) => decisions.push(event));
  const servers: AuthzServer[] = [];

  const joinToken = async (service: string) => (await createJoinToken(store, ca, { service, createdBy: 'cli' })).token;
  const enrol = async (service: string): Promise<WorkloadCredentials> =>
    joinControlPlane({ url: controlPlane.url, trustDomain: TD, joinToken: await joinToken(service), service });

  const edge = await enrol('edge');
  const gateway = await enrol('gateway');
  const payments = await enrol('payments');
  const customerToken = await minter.mint({ sub: 'alice', tctx: { roles: ['customer'] }, req_wl: gateway.spiffeId });

  return {
    scratch,
    ca,
    store,
    controlPlane,
    minter,
    edge,
    gateway,
    payments,
    customerToken,
    lastDecision(requestId) {
      const event = decisions.findLast((candidate) => candidate.requestId === requestId);
      assert.ok(event, `an audit event for request ${String(requestId)}`);
      return event;
    },
    enrol,
    async startOrdersAuthz(options) {
      const authz = await createAuthzServer({
        ...options,
        service: 'orders',
        trustDomain: TD,
        controlPlane: controlPlane.url,
        joinToken: await joinToken('orders'),
        stateDir: join(scratch, 'orders-authz'),
        txnTokenKeys: { jwks: minter.jwks },
        shipAudit: false,
      });
      servers.push(authz);
      const started = Date.now();
      while (authz.guard.policyVersion === null && Date.now() - started < 5_000)
        await new Promise((resolve) => setTimeout(resolve, 20));
      assert.notEqual(authz.guard.policyVersion, null, 'the decision service received orders’ policy slice');
      return authz;
    },
    async close() {
      unsubscribe();
      for (const authz of servers.splice(0)) await authz.close();
      await controlPlane.close();
      policy.close();
      await store.close();
      rmSync(scratch, { recursive: true, force: true });
    },
  };
}
