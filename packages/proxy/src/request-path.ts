/**
 * The sidecar refuses request targets that it and the upstream could read as two different resources:
 * the guard's one rule (`ambiguousPath` of @lockstep/guard), which the decision service applies too.
 */
export { ambiguousPath } from '@lockstep/guard';
