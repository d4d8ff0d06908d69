// @peculiar/x509 loads tsyringe, which needs the Reflect metadata polyfill first; ESM evaluates imports in order.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';

// @peculiar/x509 needs a WebCrypto provider; Node's global one is the only one we use.
x509.cryptoProvider.set(globalThis.crypto);

export { x509 };
