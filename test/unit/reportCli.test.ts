import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import nock from 'nock';
import { endpointFrom, EXIT, REPORT_HELP, runReport } from '../../src/report/cli.js';

const BASE = 'http://127.0.0.1:7070';
const TOKEN = 'uid-1.secretmac';
const env = { AGENT_REPORT_URL: BASE, AGENT_REPORT_TOKEN: TOKEN };

async function run(argv: string[], over: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runReport(argv, {
    env: over.env ?? env,
    out: (l) => out.push(l),
    err: (l) => err.push(l),
    retryDelaysMs: [5, 5],
    timeoutMs: over.timeoutMs ?? 2_000,
  });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

const endpoint = () => nock(BASE, { reqheaders: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' } });
const accepted = { accepted: true, at: '2026-11-25T10:00:00.000Z' };
// An Error instance: nock destroys the request with it, as a failed connect would.
const connectionError = (code: string) => Object.assign(new Error(`connect ${code}`), { code });

describe('report CLI over HTTP', () => {
  before(() => nock.disableNetConnect());
  afterEach(() => nock.cleanAll());
  after(() => nock.enableNetConnect());

  it('posts a status report and prints where it was recorded', async () => {
    const scope = endpoint().post('/v1/report', { status: 'working', progress: 40, message: 'halfway' }).reply(202, accepted);
    const r = await run(['--status', 'working', '--progress', '40', '--message', 'halfway']);
    assert.deepEqual(r, { code: EXIT.ok, out: `recorded at ${accepted.at}`, err: '' });
    assert.ok(scope.isDone());
  });

  it('posts a finding with its JSON data', async () => {
    const body = { type: 'vuln', severity: 'critical', message: 'sql injection', data: { file: 'a.ts', lines: [3, 4] } };
    const scope = endpoint().post('/v1/findings', body).reply(202, accepted);
    const r = await run(['finding', '--type', 'vuln', '--severity', 'critical', '--message', 'sql injection', '--data', '{"file":"a.ts","lines":[3,4]}']);
    assert.equal(r.code, EXIT.ok);
    assert.ok(scope.isDone());
  });

  it('keeps a path prefix of the base URL', async () => {
    const scope = nock(BASE).post('/node-1/v1/report').reply(202, accepted);
    const r = await run(['--status', 'blocked'], { env: { ...env, AGENT_REPORT_URL: `${BASE}/node-1/` } });
    assert.equal(r.code, EXIT.ok);
    assert.ok(scope.isDone());
  });

  it('retries when the endpoint cannot be reached, then succeeds', async () => {
    const scope = endpoint()
      .post('/v1/report')
      .replyWithError(connectionError('ECONNREFUSED'))
      .post('/v1/report')
      .replyWithError(connectionError('ECONNRESET'))
      .post('/v1/report')
      .reply(202, accepted);
    const r = await run(['--status', 'completed']);
    assert.equal(r.code, EXIT.ok);
    assert.ok(scope.isDone());
    assert.match(r.err, /cannot reach http:\/\/127\.0\.0\.1:7070 \(ECONNREFUSED\); retrying/);
    assert.match(r.err, /\(ECONNRESET\); retrying/);
  });

  it('retries when no answer comes within the timeout', async () => {
    const scope = endpoint().post('/v1/report').delay(1_000).reply(202, accepted).post('/v1/report').reply(202, accepted);
    const r = await run(['--status', 'working'], { timeoutMs: 100 });
    assert.equal(r.code, EXIT.ok);
    assert.ok(scope.isDone());
    assert.match(r.err, /\(no answer within 100 ms\); retrying/);
  });

  it('gives up after the retries with exit 3', async () => {
    const scope = endpoint().post('/v1/report').times(3).replyWithError(connectionError('ECONNREFUSED'));
    const r = await run(['--status', 'working']);
    assert.equal(r.code, EXIT.unreachable);
    assert.ok(scope.isDone());
    assert.match(r.err, /\(ECONNREFUSED\) after 3 attempts/);
  });

  const refusals: Array<[number, object | string, RegExp]> = [
    [409, { error: 'agent uid-1 has ended and no longer accepts reports' }, /refused \(HTTP 409\): agent uid-1 has ended/],
    [401, { error: 'invalid report token' }, /refused \(HTTP 401\): invalid report token$/],
    [400, { error: 'progress: must be an integer from 0 to 100' }, /HTTP 400\): progress: must be/],
    [500, 'upstream exploded', /refused \(HTTP 500\): upstream exploded$/],
  ];
  for (const [status, body, printed] of refusals) {
    it(`prints the server's error on ${status} and does not retry`, async () => {
      const scope = endpoint().post('/v1/report').reply(status, body).post('/v1/report').reply(202, accepted);
      const r = await run(['--status', 'working']);
      assert.equal(r.code, EXIT.refused);
      assert.match(r.err, printed);
      assert.equal(r.out, '');
      assert.equal(scope.pendingMocks().length, 1, 'the second interceptor must stay unused: no retry');
    });
  }
});

describe('report CLI arguments and environment', () => {
  // No interceptors and no network: any request would end as exit 3, not the exit 2 asserted here.
  before(() => nock.disableNetConnect());
  after(() => nock.enableNetConnect());

  const usage: Array<[string, string[], NodeJS.ProcessEnv, RegExp]> = [
    ['missing URL', ['--status', 'working'], { AGENT_REPORT_TOKEN: TOKEN }, /neither AGENT_REPORT_SOCKET nor AGENT_REPORT_URL is set/],
    ['socket path not absolute', ['--status', 'working'], { ...env, AGENT_REPORT_SOCKET: 'report.sock' }, /AGENT_REPORT_SOCKET must be an absolute path: 'report.sock'/],
    ['missing token', ['--status', 'working'], { AGENT_REPORT_URL: BASE }, /AGENT_REPORT_TOKEN is not set/],
    ['URL not a URL', ['--status', 'working'], { ...env, AGENT_REPORT_URL: 'not a url' }, /AGENT_REPORT_URL is not a valid URL/],
    ['URL not http', ['--status', 'working'], { ...env, AGENT_REPORT_URL: 'ftp://x' }, /AGENT_REPORT_URL must be an http or https URL/],
    ['no status', [], env, /--status: must be one of working, blocked, completed, failed, error/],
    ['bad status', ['--status', 'done'], env, /--status: must be one of/],
    ['progress not a number', ['--status', 'working', '--progress', '4O'], env, /--progress: must be an integer from 0 to 100/],
    ['progress out of range', ['--status', 'working', '--progress', '101'], env, /--progress: must be an integer/],
    ['message too long', ['--status', 'working', '--message', 'm'.repeat(4097)], env, /--message: must be a string of at most 4096/],
    ['unknown flag', ['--status', 'working', '--percent', '3'], env, /Unknown option '--percent'/],
    ['flag without value', ['--status'], env, /--status/],
    ['positional', ['working'], env, /Unexpected argument 'working'/],
    ['finding flag on a status', ['--status', 'working', '--severity', 'low'], env, /--severity not allowed in a status report/],
    ['status flag on a finding', ['finding', '--type', 't', '--severity', 'low', '--message', 'm', '--progress', '3'], env, /--progress not allowed in 'report finding'/],
    ['finding without type', ['finding', '--severity', 'low', '--message', 'm'], env, /--type: must be a string of 1 to 128/],
    ['finding bad severity', ['finding', '--type', 't', '--severity', 'severe', '--message', 'm'], env, /--severity: must be one of info, low/],
    ['finding without message', ['finding', '--type', 't', '--severity', 'low'], env, /--message: /],
    ['finding data not JSON', ['finding', '--type', 't', '--severity', 'low', '--message', 'm', '--data', '{oops'], env, /--data: not valid JSON/],
    ['finding data too large', ['finding', '--type', 't', '--severity', 'low', '--message', 'm', '--data', JSON.stringify('x'.repeat(70_000))], env, /--data: must be JSON data: it is \d+ bytes/],
  ];
  for (const [name, argv, e, printed] of usage) {
    it(`exit 2 on ${name}`, async () => {
      const r = await run(argv, { env: e });
      assert.equal(r.code, EXIT.usage);
      assert.match(r.err, printed);
      assert.match(r.err, /Run 'agent-operator report --help'/);
    });
  }

  for (const argv of [['--help'], ['-h'], ['finding', '--help']]) {
    it(`prints help for ${argv.join(' ')}, exit codes included`, async () => {
      const r = await run(argv, { env: {} });
      assert.equal(r.code, EXIT.ok);
      assert.equal(r.out, REPORT_HELP);
      assert.match(r.out, /Exit codes:\n {2}0 {2}recorded\n {2}1 .*\n {2}2 .*\n {2}3 /);
    });
  }
});

describe('report channel endpoint (endpointFrom)', () => {
  const cases: Array<[string, NodeJS.ProcessEnv, string]> = [
    ['the socket alone', { AGENT_REPORT_SOCKET: '/run/agent-operator/report.sock' }, 'socket /run/agent-operator/report.sock /v1/report'],
    ['the socket wins over a URL and token', { ...env, AGENT_REPORT_SOCKET: '/run/agent-operator/report.sock' }, 'socket /run/agent-operator/report.sock /v1/report'],
    ['the URL and token without a socket', env, `url ${BASE}/v1/report ${TOKEN}`],
    ['an empty socket variable is no socket', { ...env, AGENT_REPORT_SOCKET: '' }, `url ${BASE}/v1/report ${TOKEN}`],
    ['a URL with a path prefix keeps it', { ...env, AGENT_REPORT_URL: `${BASE}/node-a/` }, `url ${BASE}/node-a/v1/report ${TOKEN}`],
  ];
  for (const [name, e, want] of cases) {
    it(name, () => {
      const ep = endpointFrom(e, '/v1/report');
      assert.equal(ep.kind === 'socket' ? `socket ${ep.socketPath} ${ep.path}` : `url ${ep.url.href} ${ep.token}`, want);
    });
  }
});
