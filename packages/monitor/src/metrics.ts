/**
 * The control plane's Prometheus endpoint, `GET /metrics`, over mTLS for an administrator or a
 * Lockstep component (`spiffe://<td>/admin/…`, `spiffe://<td>/lockstep/…`):
 *
 *   lockstep_collector_batches_total, lockstep_collector_events_total, lockstep_collector_duplicates_total
 *   lockstep_collector_refused_total{reason}      malformed, oversized, foreign, unauthenticated
 *   lockstep_alerts_total{rule, severity}         alerts raised since start
 *   lockstep_registry_guards{mode}                registered guards by mode; lockstep_registry_stale_guards
 *   lockstep_audit_sources, lockstep_audit_events  sources in the trail and events stored
 */
import type { FastifyInstance } from 'fastify';
import { Counter, Gauge, Registry } from 'prom-client';
import { requireCaller, type ControlPlaneStore } from '@lockstep/control-plane';
import type { Collector } from './collector.ts';
import type { Detector } from './detector.ts';

const STALE_AFTER_MS = 60_000;

export function createMonitorMetrics(options: {
  store: ControlPlaneStore;
  trustDomain: string;
  collector: Collector;
  detector?: Detector;
}): { register(app: FastifyInstance): void; text(): Promise<string> } {
  const registry = new Registry();
  const { collector, store } = options;
  new Gauge({
    name: 'lockstep_collector_batches_total',
    help: 'Batches stored',
    registers: [registry],
    collect() {
      this.set(collector.stats.batches);
    },
  });
  new Gauge({
    name: 'lockstep_collector_events_total',
    help: 'Events stored',
    registers: [registry],
    collect() {
      this.set(collector.stats.events);
    },
  });
  new Gauge({
    name: 'lockstep_collector_duplicates_total',
    help: 'Events received twice (retries), stored once',
    registers: [registry],
    collect() {
      this.set(collector.stats.duplicates);
    },
  });
  new Gauge({
    name: 'lockstep_collector_refused_total',
    help: 'Batches refused, by reason',
    labelNames: ['reason'],
    registers: [registry],
    collect() {
      for (const [reason, count] of Object.entries(collector.stats.refused)) this.set({ reason }, count);
    },
  });
  const alerts = new Counter({
    name: 'lockstep_alerts_total',
    help: 'Alerts raised since start',
    labelNames: ['rule', 'severity'],
    registers: [registry],
  });
  options.detector?.onAlert((alert) => alerts.inc({ rule: alert.rule, severity: alert.severity }));
  new Gauge({
    name: 'lockstep_registry_guards',
    help: 'Registered guards by mode',
    labelNames: ['mode'],
    registers: [registry],
    async collect() {
      const services = await store.services();
      this.set({ mode: 'enforce' }, services.filter((service) => service.mode === 'enforce').length);
      this.set({ mode: 'dry-run' }, services.filter((service) => service.mode === 'dry-run').length);
    },
  });
  new Gauge({
    name: 'lockstep_registry_stale_guards',
    help: 'Guards silent for more than 60 s',
    registers: [registry],
    async collect() {
      this.set((await store.services()).filter((service) => Date.now() - service.lastSeen > STALE_AFTER_MS).length);
    },
  });
  new Gauge({
    name: 'lockstep_audit_sources',
    help: 'Sources in the audit trail',
    registers: [registry],
    async collect() {
      this.set((await store.auditHeads()).length);
    },
  });
  new Gauge({
    name: 'lockstep_audit_events',
    help: 'Events in the audit trail',
    registers: [registry],
    async collect() {
      this.set((await store.auditHeads()).reduce((sum, head) => sum + head.seq, 0));
    },
  });

  return {
    text: () => registry.metrics(),
    register(app) {
      app.get(
        '/metrics',
        { onRequest: requireCaller(options.trustDomain, ['admin', 'lockstep'], 'LOCKSTEP_CP_ADMIN_REQUIRED') },
        async (_request, reply) => reply.type(registry.contentType).send(await registry.metrics()),
      );
    },
  };
}
