export { createCollector, COLLECTOR_PATH, type Collector, type CollectorOptions, type CollectorStats } from './collector.ts';
export { signCheckpoint, verifiedCheckpoint, startCheckpointer, CHECKPOINT_TYP, type Checkpointer, type CheckpointClaims } from './checkpoints.ts';
export { verifyTrail, type VerifyReport, type Problem, type ProblemKind } from './verify.ts';
export { callChain, type CallChain } from './correlate.ts';
export { createDetector, type Detector, type DetectorOptions } from './detector.ts';
export { RULES, DEFAULT_THRESHOLDS, type Rule, type RuleId, type Thresholds } from './rules.ts';
export { createWebhook, signWebhookBody, verifyWebhookSignature, type Webhook, type WebhookOptions } from './webhook.ts';
export { createMonitorMetrics } from './metrics.ts';
export { createDashboard, DASHBOARD_CLIENT_ID, type DashboardOptions } from './dashboard.ts';
