/**
 * @lockstep/proxy — the Lockstep sidecar: the guard's pipeline in front of an unmodified HTTP
 * service in any language, and a loopback egress that originates mTLS for its outbound calls.
 * `lockstep sidecar --config <file>` runs it.
 */
export { createSidecar, type Sidecar, type SidecarOptions } from './sidecar.ts';
export {
  loadSidecarConfig,
  parseSidecarConfig,
  SidecarConfigError,
  type SidecarConfig,
  type SidecarLimits,
  type UpstreamTarget,
} from './config.ts';
export { SIDECAR_ERRORS, type SidecarErrorCode } from './errors.ts';
export { IDENTITY_PREFIX, TXN_TOKEN_HEADER } from './headers.ts';
export { TARGET_HEADER } from './egress.ts';
// The decision service (`lockstep authz-server`): nginx auth_request, Traefik forwardAuth, Envoy ext_authz, AuthZEN.
export * from './authz/index.ts';
