/**
 * The world of bench/mesh.ts, all of it real: a control plane with its monitor (assembleControlPlane,
 * the composition root `lockstep control-plane` runs: CA, Txn-Token Service, signed policy slices on
 * the stream, audit collector), the example policies plus the bench's own, the `gateway` client and the
 * `edge` proxy enrolled with join tokens, join tokens for the servers that join as `orders`, and
 * Txn-Tokens exchanged at the Txn-Token Service (each a transaction of its own).
 *
 *   const world = await createMeshWorld(scratch);
 *   const tokens = await world.mintTokens(1_000);
 *   …
 *   await world.close();
 */
import { X509Certificate } from 'node:crypto';
import { cpSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createJoinToken } from '@lockstep/control-plane';
import { assembleControlPlane, type AssembledControlPlane } from '@lockstep/monitor';
import { joinAsWorkload, joinControlPlane, type WorkloadAgent, type WorkloadCredentials } from '@lockstep/workload';
import { SERVICE } from './mesh-protocol.ts';

export const TRUST_DOMAIN = 'shop.test';
const POLICY_DIR = fileURLToPath(new URL('../../packages/guard/example/policies/', import.meta.url));
const svc = (name: string) => `spiffe://${TRUST_DOMAIN}/svc/${name}`;

/**
 * The example policies let the gateway read orders for a customer; the bench's Txn-Tokens are the
 * gateway's own work (self-signed subject tokens: no end user, so no roles), hence one more permit,
 * and the Txn-Token Service's permit for those exchanges.
 */
const BENCH_POLICY = `
@id("bench-gateway-reads-orders")
permit (principal == Lockstep::Workload::"${svc('gateway')}", action == Lockstep::Action::"orders:read",
        resource == Lockstep::Service::"${SERVICE}");
@id("bench-gateway-starts-its-own-work")
permit (principal == Lockstep::Workload::"${svc('gateway')}", action == Lockstep::Action::"tts:exchange:self_signed",
        resource == Lockstep::Service::"tts");
`;

export interface MeshWorld {
  readonly controlPlane: AssembledControlPlane;
  readonly bundlePem: string;
  /** The calling workload: its SVID is what the load generator presents to every mTLS hop. */
  readonly gateway: WorkloadCredentials;
  /** The proxy the decision service trusts to ask (its SVID), and the SPIFFE ID to list. */
  readonly edge: WorkloadCredentials;
  /** An SVID of `orders` for nginx to present: a proxy in front of orders speaks as orders. */
  readonly ordersProxy: WorkloadCredentials;
  /** A one-use join token for one more `orders` server. */
  joinToken(): Promise<string>;
  /** `count` distinct Txn-Tokens from the Txn-Token Service, requested by the gateway (scope orders:read). */
  mintTokens(count: number): Promise<string[]>;
  /** The XFCC header Envoy would send the decision service for a request from the gateway. */
  readonly xfcc: string;
  /** The gateway's certificate as Envoy's gRPC CheckRequest carries it (`source.certificate`: URL-encoded PEM). */
  readonly forwardedCertificate: string;
  close(): Promise<void>;
}

export async function createMeshWorld(scratch: string): Promise<MeshWorld> {
  const policyDir = join(scratch, 'policies');
  cpSync(POLICY_DIR, policyDir, { recursive: true });
  writeFileSync(join(policyDir, 'bench-mesh.cedar'), BENCH_POLICY);
  const controlPlane = await assembleControlPlane({
    trustDomain: TRUST_DOMAIN,
    keyDir: join(scratch, 'keys'),
    store: { sqlite: join(scratch, 'control-plane.db') },
    policyDir,
    watchPolicy: false,
    checkpointIntervalMs: 3_600_000,
    detection: { sweepMs: 3_600_000 },
    output: { warning: () => {} },
  });
  let minter: WorkloadAgent | null = null;
  try {
    const joinToken = async (service: string) =>
      (await createJoinToken(controlPlane.store, controlPlane.ca, { service, createdBy: 'bench-mesh' })).token;
    const enrol = async (service: string) =>
      joinControlPlane({
        url: controlPlane.url,
        trustDomain: TRUST_DOMAIN,
        joinToken: await joinToken(service),
        service,
      });
    const [gateway, edge, ordersProxy] = [await enrol('gateway'), await enrol('edge'), await enrol(SERVICE)];
    // The gateway's agent exchanges at the Txn-Token Service over mTLS with its own SVID.
    const agent = await joinAsWorkload({
      url: controlPlane.url,
      trustDomain: TRUST_DOMAIN,
      joinToken: await joinToken('gateway'),
      service: 'gateway',
      stateDir: join(scratch, 'gateway'),
    });
    minter = agent;
    const leaf = new X509Certificate(gateway.chainPem);
    const xfcc =
      `By=${svc(SERVICE)};Hash=${leaf.fingerprint256.replaceAll(':', '').toLowerCase()};` +
      `Cert="${encodeURIComponent(leaf.toString())}";URI=${gateway.spiffeId}`;
    return {
      controlPlane,
      bundlePem: controlPlane.bundlePem,
      gateway,
      edge,
      ordersProxy,
      xfcc,
      forwardedCertificate: encodeURIComponent(leaf.toString()),
      joinToken: () => joinToken(SERVICE),
      async mintTokens(count) {
        const tokens: string[] = new Array<string>(count);
        let next = 0;
        // A few exchanges in flight at once: the control plane is in this process.
        await Promise.all(
          Array.from({ length: 8 }, async () => {
            while (next < count) {
              const index = next++;
              tokens[index] = await agent.txnToken({ subjectTokenType: 'self_signed', scope: 'orders:read' });
            }
          }),
        );
        return tokens;
      },
      async close() {
        await agent.close();
        await controlPlane.close();
      },
    };
  } catch (error) {
    await minter?.close();
    await controlPlane.close();
    throw error;
  }
}
