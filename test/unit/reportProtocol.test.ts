import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LIMITS } from '../../src/api/constants.js';
import { REPORTED_STATES } from '../../src/api/phase.js';
import {
  acceptedResponseSchema,
  findingRecordSchema,
  jsonDataProblem,
  MAX_BODY_BYTES,
  MAX_DATA_BYTES,
  MAX_DATA_DEPTH,
  MAX_FINDING_TYPE_LENGTH,
  SEVERITIES,
  statusRecordSchema,
  validateFinding,
  validateStatusReport,
} from '../../src/report/protocol.js';

const nested = (depth: number): unknown => {
  let v: unknown = 0;
  for (let i = 1; i < depth; i++) v = [v];
  return v;
};

type Case = { name: string; input: unknown; error?: RegExp };

describe('status report validation', () => {
  const cases: Case[] = [
    ...REPORTED_STATES.map((status) => ({ name: `state ${status}`, input: { status } })),
    { name: 'progress bounds', input: { status: 'working', progress: 0 } },
    { name: 'progress 100 with message', input: { status: 'working', progress: 100, message: 'done soon' } },
    { name: 'empty message', input: { status: 'blocked', message: '' } },
    { name: 'longest message', input: { status: 'working', message: 'm'.repeat(LIMITS.messageLength) } },
    { name: 'missing status', input: { progress: 3 }, error: /^status: must be one of working, blocked, completed, failed, error$/ },
    { name: 'unknown status', input: { status: 'done' }, error: /^status: must be one of/ },
    { name: 'status not a string', input: { status: 1 }, error: /^status: / },
    { name: 'progress over 100', input: { status: 'working', progress: 101 }, error: /^progress: must be an integer from 0 to 100$/ },
    { name: 'negative progress', input: { status: 'working', progress: -1 }, error: /^progress: / },
    { name: 'fractional progress', input: { status: 'working', progress: 1.5 }, error: /^progress: / },
    { name: 'progress as a string', input: { status: 'working', progress: '40' }, error: /^progress: / },
    { name: 'message too long', input: { status: 'working', message: 'm'.repeat(LIMITS.messageLength + 1) }, error: /^message: .*at most 4096/ },
    { name: 'message not a string', input: { status: 'working', message: 5 }, error: /^message: / },
    { name: 'unknown field', input: { status: 'working', progres: 4 }, error: /^unknown field 'progres'$/ },
    { name: 'not an object', input: [1], error: /^body: must be a JSON object/ },
    { name: 'null', input: null, error: /^body: must be a JSON object/ },
    { name: 'two bad fields, both named', input: { status: 'x', progress: 200 }, error: /^status: .*; progress: / },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const result = validateStatusReport(c.input);
      if (c.error) {
        assert.equal(result.ok, false);
        assert.match(result.ok ? '' : result.error, c.error);
      } else {
        assert.deepEqual(result, { ok: true, value: c.input });
      }
    });
  }

  it('names fields with the given namer (the CLI names its flags)', () => {
    const result = validateStatusReport({ status: 'working', progress: 200 }, (f) => `--${f}`);
    assert.deepEqual(result, { ok: false, error: '--progress: must be an integer from 0 to 100' });
  });
});

describe('finding validation', () => {
  const base = { type: 'secret-in-repo', severity: 'high', message: 'found an AWS key in .env' };
  const cases: Case[] = [
    ...SEVERITIES.map((severity) => ({ name: `severity ${severity}`, input: { ...base, severity } })),
    { name: 'data object', input: { ...base, data: { file: '.env', line: 3, tags: ['aws', null, true] } } },
    { name: 'data null', input: { ...base, data: null } },
    { name: 'data string', input: { ...base, data: 'plain' } },
    { name: 'data at the depth bound', input: { ...base, data: nested(MAX_DATA_DEPTH) } },
    { name: 'longest type', input: { ...base, type: 't'.repeat(MAX_FINDING_TYPE_LENGTH) } },
    { name: 'empty type', input: { ...base, type: '' }, error: /^type: must be a string of 1 to 128 characters$/ },
    { name: 'type too long', input: { ...base, type: 't'.repeat(MAX_FINDING_TYPE_LENGTH + 1) }, error: /^type: / },
    { name: 'missing type', input: { severity: 'low', message: 'm' }, error: /^type: / },
    { name: 'unknown severity', input: { ...base, severity: 'urgent' }, error: /^severity: must be one of info, low, medium, high, critical$/ },
    { name: 'empty message', input: { ...base, message: '' }, error: /^message: must be a string of 1 to 4096/ },
    { name: 'missing message', input: { type: 't', severity: 'low' }, error: /^message: / },
    { name: 'data too deep', input: { ...base, data: nested(MAX_DATA_DEPTH + 1) }, error: /^data: must be JSON data: it nests deeper than 64 levels$/ },
    { name: 'data too large', input: { ...base, data: 'x'.repeat(MAX_DATA_BYTES) }, error: /^data: .*over the 65536 byte limit$/ },
    { name: 'data with a function', input: { ...base, data: { f: () => 1 } }, error: /^data: .*function/ },
    { name: 'data with NaN', input: { ...base, data: [Number.NaN] }, error: /^data: .*number/ },
    { name: 'data with a Date', input: { ...base, data: new Date(0) }, error: /^data: .*not plain JSON/ },
    { name: 'unknown field', input: { ...base, sev: 'x' }, error: /^unknown field 'sev'$/ },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const result = validateFinding(c.input);
      if (c.error) {
        assert.equal(result.ok, false);
        assert.match(result.ok ? '' : result.error, c.error);
      } else {
        assert.deepEqual(result, { ok: true, value: c.input });
      }
    });
  }

  it('rejects a value nested far past the stack limit without overflowing', () => {
    assert.match(jsonDataProblem(nested(200_000)) ?? '', /nests deeper/);
  });

  it('every finding the schema accepts fits in a request body', () => {
    // Worst case: every character of message and type escapes to \uXXXX, data at its limit.
    const worst = {
      type: '\u0001'.repeat(MAX_FINDING_TYPE_LENGTH),
      severity: 'critical',
      message: '\u0001'.repeat(LIMITS.messageLength),
      data: 'x'.repeat(MAX_DATA_BYTES - 2),
    };
    assert.equal(validateFinding(worst).ok, true);
    assert.ok(Buffer.byteLength(JSON.stringify(worst)) <= MAX_BODY_BYTES);
  });
});

describe('record and response schemas', () => {
  const at = '2026-11-25T10:00:00.000Z';
  it('a record is the report plus the server timestamp', () => {
    assert.equal(statusRecordSchema.safeParse({ at, status: 'working', progress: 5 }).success, true);
    assert.equal(findingRecordSchema.safeParse({ at, type: 't', severity: 'low', message: 'm' }).success, true);
    assert.equal(statusRecordSchema.safeParse({ status: 'working' }).success, false);
    assert.equal(statusRecordSchema.safeParse({ at: 'yesterday', status: 'working' }).success, false);
  });
  it('the accepted response carries the timestamp', () => {
    assert.equal(acceptedResponseSchema.safeParse({ accepted: true, at }).success, true);
    assert.equal(acceptedResponseSchema.safeParse({ accepted: false, at }).success, false);
  });
});
