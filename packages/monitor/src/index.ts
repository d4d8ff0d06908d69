export {
  createCollector,
  COLLECTOR_PATH,
  type Collector,
  type CollectorOptions,
  type CollectorStats,
} from './collector.ts';
export {
  createScanReceiver,
  scanStatus,
  SCANS_PATH,
  type ScanReceiver,
  type ScanReceiverOptions,
  type ScanStatus,
  type ScanSummaryCounts,
} from './scans.ts';
export {
  AUDIT_HEAD_FILE,
  CHAIN_TYP,
  chainPayload,
  linkDigest,
  signLink,
  startCheckpointer,
  verifiedLink,
  witnessAppends,
  type AppendWitness,
  type ChainClaims,
  type Checkpointer,
  type Incident,
} from './checkpoints.ts';
export { verifyTrail, type Problem, type ProblemKind, type VerifyOptions, type VerifyReport } from './verify.ts';
export { callChain, type CallChain } from './correlate.ts';
export { isProbeEvent, scannerOf, type AuditEvent } from './probes.ts';
export { createDetector, type Detector, type DetectorOptions } from './detector.ts';
export { RULES, DEFAULT_THRESHOLDS, OUTAGE_REASONS, type Rule, type RuleId, type Thresholds } from './rules.ts';
export {
  createWebhook,
  signWebhookBody,
  verifyWebhookSignature,
  type Webhook,
  type WebhookOptions,
} from './webhook.ts';
export { createMonitorMetrics } from './metrics.ts';
export { createDashboard, DASHBOARD_CLIENT_ID, type DashboardOptions } from './dashboard.ts';
export { serveAdminEvents, EVENTS_PATH } from './admin-events.ts';
export {
  decisionOf,
  DEFAULT_EVENT_LIMIT,
  EVENT_DECISIONS,
  EVENT_FILTERS,
  MAX_EVENTS,
  newestEvents,
  parseEventQuery,
  type EventDecision,
  type EventFilter,
  type EventQuery,
} from './recent-events.ts';
export { recordAdminTrail, type AdminTrail, type AdminTrailOptions } from './admin-trail.ts';
export {
  assembleControlPlane,
  openAuditKeys,
  openControlPlaneKeys,
  openStoreAt,
  StoreUnavailableError,
  type AssembledControlPlane,
  type ControlPlaneAssemblyOptions,
  type ControlPlaneOutput,
  type ExternalIssuer,
  type StoreLocation,
} from './assemble-control-plane.ts';
