import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { generateReportSecret, reportTokenFor, verifyReportToken } from '../../src/report/token.js';

describe('report tokens', () => {
  const secret = generateReportSecret();
  const uidA = '11111111-2222-3333-4444-555555555555';
  const uidB = '99999999-2222-3333-4444-555555555555';
  const tokenA = reportTokenFor(secret, uidA);

  it('is deterministic for a secret and uid, so it survives a sidecar restart', () => {
    assert.equal(reportTokenFor(secret, uidA), tokenA);
    assert.notEqual(reportTokenFor(secret, uidB), tokenA);
  });

  it('names the agent it was issued for', () => {
    assert.equal(verifyReportToken(secret, tokenA), uidA);
  });

  const mac = tokenA.slice(tokenA.lastIndexOf('.') + 1);
  const refused: Array<[string, string]> = [
    ["another agent's uid with A's MAC", `${uidB}.${mac}`],
    ['a MAC changed in one character', `${uidA}.${mac.startsWith('A') ? 'B' : 'A'}${mac.slice(1)}`],
    ['a truncated MAC', tokenA.slice(0, -2)],
    ['no MAC', `${uidA}.`],
    ['no uid', `.${mac}`],
    ['no separator', uidA],
    ['empty', ''],
  ];
  for (const [name, token] of refused) {
    it(`refuses ${name}`, () => assert.equal(verifyReportToken(secret, token), undefined));
  }

  it('refuses a token issued with another secret', () => {
    assert.equal(verifyReportToken(generateReportSecret(), tokenA), undefined);
  });

  it('refuses to issue for a uid that would make the token ambiguous', () => {
    assert.throws(() => reportTokenFor(secret, 'a.b'), /invalid agent uid/);
    assert.throws(() => reportTokenFor(secret, ''), /invalid agent uid/);
  });
});
