// Moved to @lockstep/identity; kept for pipeline.ts's import until its owner points it there.
export { isValidTrustDomain, parseSpiffeId, type SpiffeId } from '@lockstep/identity';
