/** The Cedar context of every Lockstep request (type `Lockstep::RequestContext` in base.cedarschema). */
export type RequestContext = {
  /** Txn-Token `sub`; "" when the route is public. */
  readonly sub: string;
  /** `tctx.roles` (strings only). */
  readonly roles: readonly string[];
  /** Txn-Token `scope` split on spaces. */
  readonly scope: readonly string[];
  /** `tctx.tenant` when it is a string. */
  readonly tenant?: string;
  /** The workload that started the transaction: the first `req_wl` of its Txn-Token's chain; "" when none. */
  readonly requester: string;
  /** `<name>` of the caller's `spiffe://<td>/svc/<name>`, else "". */
  readonly callerService: string;
  /**
   * Who owns the object the request addresses ("" when it does not exist), for routes that declare
   * an owner lookup: object-level authorization (`context.owner == context.sub`) in the policy, not in
   * handler code.
   */
  readonly owner?: string;
};

/** One authorization question: who (SPIFFE ID) may do what (action id) on which service. */
export type AuthorizationRequest = {
  readonly principal: string;
  readonly action: string;
  readonly resource: string;
  readonly context: RequestContext;
};
