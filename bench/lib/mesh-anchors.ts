/**
 * The service meshes' published per-proxy figures that bench/mesh.ts and bench/guard.ts both set their
 * own results beside, kept in one place so that the two pages never quote different numbers.
 */

export interface PublishedAnchor {
  readonly label: string;
  readonly vcpuPer1000Rps: number;
  /** As published, in MB. */
  readonly memoryMb: number;
  /** The published latency figure, in words (how many hops it covers), or '—'. */
  readonly latency: string;
}

export const PUBLISHED_ANCHORS: readonly PublishedAnchor[] = [
  {
    label: 'Istio 1.24 sidecar (Envoy, 2 worker threads), published',
    vcpuPer1000Rps: 0.2,
    memoryMb: 60,
    latency: 'two hops (client and server sidecar): +0.20 ms p99',
  },
  { label: 'Istio 1.24 ztunnel (ambient, one per node), published', vcpuPer1000Rps: 0.06, memoryMb: 12, latency: '—' },
];

/** Where the anchors come from and how far they compare; each page follows it with what its own rows are. */
export const ANCHORS_SOURCE =
  "Istio's figures are from Istio's performance docs (istio.io, *Performance and Scalability*, performance summary for Istio 1.24: 1,000 HTTP requests per second with 1 KB payloads). They were measured on other hardware, with a 1 KB payload, and Envoy doing routing and telemetry, not authorization";

/** `| label | 0.20 | 60 MB | latency |`, plus `extra` cells (one per further column of the table). */
export function anchorRows(extra: readonly string[] = []): string[] {
  return PUBLISHED_ANCHORS.map(
    (anchor) =>
      `| ${[anchor.label, anchor.vcpuPer1000Rps.toFixed(2), `${anchor.memoryMb} MB`, anchor.latency, ...extra].join(' | ')} |`,
  );
}
