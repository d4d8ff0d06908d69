export { createCollector, COLLECTOR_PATH, type Collector, type CollectorOptions, type CollectorStats } from './collector.ts';
export { signCheckpoint, verifiedCheckpoint, startCheckpointer, CHECKPOINT_TYP, type Checkpointer, type CheckpointClaims } from './checkpoints.ts';
export { verifyTrail, type VerifyReport, type Problem, type ProblemKind } from './verify.ts';
export { callChain, type CallChain } from './correlate.ts';
