/**
 * The decision service (`lockstep authz-server`): the guard's pipeline for nginx `auth_request`,
 * Traefik `forwardAuth`, Envoy `ext_authz` (HTTP) and OpenID AuthZEN 1.0. See README.md beside this file.
 */
export { createAuthzServer, type AuthzServer, type AuthzServerOptions } from './server.ts';
export { fromNginxHeader, fromTraefikHeader, fromXfccHeader, type ForwardedCertificate } from './client-certificate.ts';
