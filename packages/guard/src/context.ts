/**
 * The admission of the request being handled, carried through the handler's async work so that the
 * outbound client can propagate its Txn-Token and trace context without the handler passing them.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import type { Admission } from './pipeline.ts';

export const admissionStorage = new AsyncLocalStorage<Admission>();

/** The admission of the request whose handler is running, or undefined outside one. */
export function currentAdmission(): Admission | undefined {
  return admissionStorage.getStore();
}
