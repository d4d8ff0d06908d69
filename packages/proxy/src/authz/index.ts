/**
 * The decision service (`lockstep authz-server`): the guard's pipeline for nginx `auth_request`,
 * Traefik `forwardAuth`, Envoy `ext_authz` (HTTP and gRPC) and OpenID AuthZEN 1.0. See README.md beside
 * this file.
 */
export { createAuthzServer, type AuthzServer, type AuthzServerOptions } from './server.ts';
export {
  AuthzServerConfigError,
  loadAuthzServerConfig,
  parseAuthzServerConfig,
  type AuthzServerConfig,
  type AuthzServerLimits,
} from './config.ts';
export {
  fromEnvoyPeerCertificate,
  fromNginxHeader,
  fromTraefikHeader,
  fromXfccHeader,
  type ForwardedCertificate,
} from './client-certificate.ts';
