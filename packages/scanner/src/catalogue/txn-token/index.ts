/** The txn-token attacks, in catalogue order. */
import type { Attack } from '../attack.ts';
import missing from './missing.ts';
import duplicateHeader from './duplicate-header.ts';
import algNone from './alg-none.ts';
import signatureStripped from './signature-stripped.ts';
import hs256KeyConfusion from './hs256-key-confusion.ts';
import ecdsaZeroSignature from './ecdsa-zero-signature.ts';
import payloadTampered from './payload-tampered.ts';
import embeddedJwk from './embedded-jwk.ts';
import jkuX5u from './jku-x5u.ts';
import kidTraversal from './kid-traversal.ts';
import kidUnknown from './kid-unknown.ts';
import critUnknown from './crit-unknown.ts';
import b64False from './b64-false.ts';
import jwe from './jwe.ts';
import expired from './expired.ts';
import notYetValid from './not-yet-valid.ts';
import noExp from './no-exp.ts';
import lifetimeOverMax from './lifetime-over-max.ts';
import wrongAudience from './wrong-audience.ts';
import wrongType from './wrong-type.ts';
import userToken from './user-token.ts';
import foreignTrustDomain from './foreign-trust-domain.ts';
import duplicateClaims from './duplicate-claims.ts';
import nulClaims from './nul-claims.ts';
import oversized from './oversized.ts';
import revokedSub from './revoked-sub.ts';
import revokedTxn from './revoked-txn.ts';
import noTxn from './no-txn.ts';
import noScope from './no-scope.ts';
import noReqWl from './no-req-wl.ts';
import claimWrongType from './claim-wrong-type.ts';
import tctxProtoKey from './tctx-proto-key.ts';

export const txnTokenAttacks: readonly Attack[] = [
  missing,
  duplicateHeader,
  algNone,
  signatureStripped,
  hs256KeyConfusion,
  ecdsaZeroSignature,
  payloadTampered,
  embeddedJwk,
  jkuX5u,
  kidTraversal,
  kidUnknown,
  critUnknown,
  b64False,
  jwe,
  expired,
  notYetValid,
  noExp,
  lifetimeOverMax,
  wrongAudience,
  wrongType,
  userToken,
  foreignTrustDomain,
  duplicateClaims,
  nulClaims,
  oversized,
  revokedSub,
  revokedTxn,
  noTxn,
  noScope,
  noReqWl,
  claimWrongType,
  tctxProtoKey,
];
