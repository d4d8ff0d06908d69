/**
 * Prometheus metrics of one guard (prom-client, a registry of its own):
 *
 *   lockstep_guard_decisions_total{decision, reason}     every decision of real traffic, by result and reason code
 *   lockstep_guard_probes_total{decision}                a scanner's probes (counted apart: a scan is no traffic)
 *   lockstep_guard_decision_seconds                      time the guard spent deciding (histogram)
 *   lockstep_guard_cache_hit_ratio{cache}                verified-token and decision caches
 *   lockstep_guard_svid_expiry_seconds                   seconds until the SVID expires
 *   lockstep_guard_policy_info{version}                  the policy version in force (value 1)
 *   lockstep_guard_dry_run                               1 when the guard lets denials through
 *   lockstep_guard_audit_events{outcome}                 shipping to the collector: sent, spooled, dropped, refused
 *
 * Expose them where only the monitoring system reaches (an internal port), not on the public API.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { subscribeDecisions } from './steps/audit.ts';

export interface MetricsSource {
  readonly service: string;
  stats(): {
    tokens: { hits: number; verified: number };
    decisions: { hits: number; misses: number };
    shipping: { sent: number; spooled: number; dropped: number; refused: number } | null;
  };
  status(): { policyVersion: string | null; svidExpiresAt: string; mode: 'enforce' | 'dry-run' };
}

export interface GuardMetrics {
  readonly contentType: string;
  /** The exposition text, for a GET /metrics handler. */
  text(): Promise<string>;
  close(): void;
}

export function createGuardMetrics(guard: MetricsSource): GuardMetrics {
  const registry = new Registry();
  registry.setDefaultLabels({ service: guard.service });
  const decisions = new Counter({
    name: 'lockstep_guard_decisions_total',
    help: 'Decisions of real traffic (not probes) by result and reason code',
    labelNames: ['decision', 'reason'],
    registers: [registry],
  });
  const probes = new Counter({
    name: 'lockstep_guard_probes_total',
    help: "A scanner's probes (lockstep scan), by result",
    labelNames: ['decision'],
    registers: [registry],
  });
  const latency = new Histogram({
    name: 'lockstep_guard_decision_seconds',
    help: 'Time spent deciding one request',
    buckets: [0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1],
    registers: [registry],
  });
  const ratio = (hits: number, misses: number) => (hits + misses === 0 ? 0 : hits / (hits + misses));
  new Gauge({
    name: 'lockstep_guard_cache_hit_ratio',
    help: 'Share of lookups answered from the cache',
    labelNames: ['cache'],
    registers: [registry],
    collect() {
      const stats = guard.stats();
      this.set({ cache: 'tokens' }, ratio(stats.tokens.hits, stats.tokens.verified));
      this.set({ cache: 'decisions' }, ratio(stats.decisions.hits, stats.decisions.misses));
    },
  });
  new Gauge({
    name: 'lockstep_guard_svid_expiry_seconds',
    help: 'Seconds until the SVID expires',
    registers: [registry],
    collect() {
      this.set((Date.parse(guard.status().svidExpiresAt) - Date.now()) / 1000);
    },
  });
  new Gauge({
    name: 'lockstep_guard_policy_info',
    help: 'The policy version in force (value 1)',
    labelNames: ['version'],
    registers: [registry],
    collect() {
      this.reset();
      this.set({ version: guard.status().policyVersion ?? 'none' }, 1);
    },
  });
  new Gauge({
    name: 'lockstep_guard_dry_run',
    help: '1 when denials are let through (dry-run mode)',
    registers: [registry],
    collect() {
      this.set(guard.status().mode === 'dry-run' ? 1 : 0);
    },
  });
  new Gauge({
    name: 'lockstep_guard_audit_events',
    help: 'Decision events shipped to the collector, by outcome',
    labelNames: ['outcome'],
    registers: [registry],
    collect() {
      const shipping = guard.stats().shipping;
      if (shipping === null) return;
      for (const outcome of ['sent', 'spooled', 'dropped', 'refused'] as const)
        this.set({ outcome }, shipping[outcome]);
    },
  });
  const unsubscribe = subscribeDecisions((event) => {
    if (event.service !== guard.service) return;
    if (event.probe !== undefined) probes.inc({ decision: event.decision });
    else decisions.inc({ decision: event.decision, reason: event.reason });
    latency.observe(event.latencyMs / 1000);
  });
  return { contentType: registry.contentType, text: () => registry.metrics(), close: unsubscribe };
}
