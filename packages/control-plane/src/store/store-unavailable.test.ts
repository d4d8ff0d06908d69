/**
 * Which failures are the store's absence (answered 503 LOCKSTEP_CP_STORE, clients ask another replica)
 * and which are not (500 LOCKSTEP_CP_INTERNAL). The pg shapes are those pg 8 and pg-pool 3 produce.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isStoreUnavailable } from './store-unavailable.ts';

const coded = (code: string, message = code) => Object.assign(new Error(message), { code });
/** pg's DatabaseError: a message from the server, its SQLSTATE in `code`, and a severity. */
const database = (code: string, message: string) =>
  Object.assign(new Error(message), { name: 'error', code, severity: 'FATAL' });

describe('isStoreUnavailable', () => {
  const table: [string, unknown, boolean][] = [
    ['connection refused', coded('ECONNREFUSED', 'connect ECONNREFUSED 127.0.0.1:5432'), true],
    ['connection reset', coded('ECONNRESET', 'read ECONNRESET'), true],
    ['timed out', coded('ETIMEDOUT'), true],
    ['refused at every address', new AggregateError([coded('ECONNREFUSED'), coded('ECONNREFUSED')]), true],
    ['a name that does not resolve', coded('ENOTFOUND', 'getaddrinfo ENOTFOUND db'), true],
    ['the connection ended', new Error('Connection terminated unexpectedly'), true],
    ['the connect timeout', new Error('Connection terminated due to connection timeout'), true],
    ["the pool's checkout timeout", new Error('timeout exceeded when trying to connect'), true],
    ['query_timeout', new Error('Query read timeout'), true],
    [
      'a client whose connection failed',
      new Error('Client has encountered a connection error and is not queryable'),
      true,
    ],
    ['an administrator ended the session (57P01)', database('57P01', 'terminating connection due to admin'), true],
    ['the database is starting (57P03)', database('57P03', 'the database system is starting up'), true],
    ['statement_timeout (57014)', database('57014', 'canceling statement due to statement timeout'), true],
    ['too many connections (53300)', database('53300', 'sorry, too many clients already'), true],
    ['a connection failure (08006)', database('08006', 'connection failure'), true],
    ["this replica's login refused (28P01)", database('28P01', 'password authentication failed'), true],
    ['an I/O error (58030)', database('58030', 'could not write'), true],
    ['as the cause', new Error('renewal failed', { cause: coded('ECONNRESET') }), true],
    ['a unique violation (23505)', database('23505', 'duplicate key value violates unique constraint'), false],
    ['a syntax error (42601)', database('42601', 'syntax error at or near'), false],
    ['a missing table (42P01)', database('42P01', 'relation "revocations" does not exist'), false],
    ['a plain bug', new TypeError("Cannot read properties of undefined (reading 'seq')"), false],
    ['nothing', undefined, false],
    ['a string', 'ECONNREFUSED', false],
  ];
  for (const [what, given, expected] of table) {
    it(`${expected ? 'is' : 'is not'} the store's absence: ${what}`, () => {
      assert.equal(isStoreUnavailable(given), expected);
    });
  }
});
