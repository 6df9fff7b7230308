/**
 * The report endpoint for real: a real server on loopback, real HTTP, real files, and the `report`
 * CLI as a real child process.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmod, chown, mkdir, mkdtemp, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import http, { type IncomingHttpHeaders } from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { pino } from 'pino';
import { MAX_BODY_BYTES, RECORD_FILES, type Finding, type StatusReport } from '../../src/report/protocol.js';
import { startReportServer, type AgentContext, type ReportServer, type ReportServerOptions } from '../../src/report/server.js';
import { sha256Hex } from '../../src/sidecar/runtime/workspace.js';

const CLI_MAIN = fileURLToPath(new URL('../../src/report/cli-main.js', import.meta.url));
const logger = pino({ level: process.env.LOG_LEVEL ?? 'silent' });

interface Agent extends AgentContext {
  token: string;
}
interface Reflected {
  uid: string;
  kind: 'status' | 'finding';
  report: StatusReport | Finding;
  at: Date;
}

interface Fixture {
  server: ReportServer;
  a: Agent;
  b: Agent;
  /** Every callback invocation, in order. */
  reflected: Reflected[];
  lines(agent: Agent, kind?: keyof typeof RECORD_FILES): Promise<Record<string, unknown>[]>;
}

type Overrides = Partial<Omit<ReportServerOptions<Agent>, 'logger' | 'authenticate'>>;

async function startFixture(t: TestContext, overrides: Overrides = {}): Promise<Fixture> {
  const root = await mkdtemp(join(tmpdir(), 'report-it-'));
  t.after(() => rm(root, { recursive: true, force: true }));
  // Tokens as the sidecar issues them (reportIntake.ts): random, known to it by their SHA-256 only.
  const agents = new Map<string, Agent>();
  const byTokenHash = new Map<string, Agent>();
  for (const uid of ['aaaaaaaa-0000-0000-0000-000000000001', 'bbbbbbbb-0000-0000-0000-000000000002']) {
    const workspaceDir = join(root, uid);
    await mkdir(workspaceDir);
    const agent = { uid, workspaceDir, acceptingReports: true, token: randomBytes(32).toString('base64url') };
    agents.set(uid, agent);
    byTokenHash.set(sha256Hex(agent.token), agent);
  }
  const reflected: Reflected[] = [];
  const server = await startReportServer<Agent>({
    port: 0,
    logger,
    authenticate: (token) => byTokenHash.get(sha256Hex(token)),
    agentContext: (uid) => agents.get(uid),
    onStatus: async (ctx, report, at) => void reflected.push({ uid: ctx.uid, kind: 'status', report, at }),
    onFinding: async (ctx, report, at) => void reflected.push({ uid: ctx.uid, kind: 'finding', report, at }),
    ...overrides,
  });
  t.after(() => server.close());
  const [a, b] = [...agents.values()] as [Agent, Agent];
  return {
    server,
    a,
    b,
    reflected,
    lines: async (agent, kind = 'status') => {
      const text = await readFile(join(agent.workspaceDir, RECORD_FILES[kind]), 'utf8').catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') return '';
        throw err;
      });
      return text
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>);
    },
  };
}

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: Record<string, unknown>;
}

interface Send {
  method?: string;
  token?: string;
  contentType?: string;
  body?: string | Buffer;
  /** Sent in pieces without Content-Length. */
  chunked?: boolean;
  headers?: Record<string, string>;
  /** Over this unix socket (the url's host is then only the Host header). */
  socketPath?: string;
}

function send(url: string, send: Send = {}): Promise<Answer> {
  const headers: Record<string, string> = { ...send.headers };
  if (send.token !== undefined) headers.authorization = `Bearer ${send.token}`;
  if (send.contentType !== undefined) headers['content-type'] = send.contentType;
  const body = send.body === undefined ? undefined : Buffer.from(send.body);
  if (body && !send.chunked) headers['content-length'] = String(body.length);
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: send.method ?? 'POST', headers, signal: AbortSignal.timeout(10_000), ...(send.socketPath ? { socketPath: send.socketPath } : {}) }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} });
      });
    });
    // Writing a refused body may fail once the server has answered and closed: the answer is what counts.
    req.on('error', (err) => reject(err));
    if (body && send.chunked) {
      let offset = 0;
      const pump = () => {
        while (offset < body.length) {
          const ok = req.write(body.subarray(offset, offset + 16_384));
          offset += 16_384;
          if (!ok) return void req.once('drain', pump);
        }
        req.end();
      };
      pump();
    } else {
      req.end(body);
    }
  });
}

const json = (v: unknown) => JSON.stringify(v);
const reportAs = (f: Fixture, agent: Agent, body: unknown, path = '/v1/report') => send(`${f.server.url}${path}`, { token: agent.token, contentType: 'application/json', body: json(body) });

describe('report server', () => {
  it('answers /healthz without a token', async (t) => {
    const f = await startFixture(t);
    const r = await send(`${f.server.url}/healthz`, { method: 'GET' });
    assert.equal(r.status, 200);
    assert.deepEqual(r.body, { ok: true });
  });

  it('writes the status report to reports.jsonl before answering 202, then reflects it', async (t) => {
    const seenAtCallback: unknown[][] = [];
    const f: Fixture = await startFixture(t, {
      // The callback runs after the write: the line is already in the file when it is called.
      onStatus: async (ctx) => void seenAtCallback.push(await f.lines(ctx)),
    });
    const report = { status: 'working', progress: 40, message: 'halfway' };
    const r = await reportAs(f, f.a, report);
    assert.equal(r.status, 202);
    assert.equal(r.headers.connection, 'close');
    assert.equal(r.body.accepted, true);
    const at = r.body.at as string;
    assert.deepEqual(await f.lines(f.a), [{ at, ...report }]);
    assert.deepEqual(seenAtCallback, [[{ at, ...report }]]);
    assert.deepEqual(await f.lines(f.b), [], "nothing lands in the other agent's workspace");
  });

  it('writes a finding with its data to findings.jsonl and reflects it with the server time', async (t) => {
    const f = await startFixture(t);
    const finding = { type: 'leaked-secret', severity: 'critical', message: 'AWS key in .env', data: { file: '.env', line: 3 } };
    const r = await reportAs(f, f.a, finding, '/v1/findings');
    assert.equal(r.status, 202);
    assert.deepEqual(await f.lines(f.a, 'finding'), [{ at: r.body.at, ...finding }]);
    assert.deepEqual(await f.lines(f.a, 'status'), []);
    assert.equal(f.reflected.length, 1);
    assert.deepEqual(f.reflected[0], { uid: f.a.uid, kind: 'finding', report: finding, at: new Date(r.body.at as string) });
  });

  it('answers 202 even when the callback fails or hangs: the report is already durable', async (t) => {
    let calls = 0;
    const f = await startFixture(t, {
      callbackTimeoutMs: 200,
      onStatus: () => (++calls === 1 ? Promise.reject(new Error('api server down')) : new Promise<void>(() => {})),
    });
    const failed = await reportAs(f, f.a, { status: 'working', progress: 1 });
    const started = Date.now();
    const hung = await reportAs(f, f.a, { status: 'working', progress: 2 });
    assert.deepEqual([failed.status, hung.status], [202, 202]);
    assert.ok(Date.now() - started < 2_000, 'a hanging callback delays the answer by its timeout only');
    assert.deepEqual(
      (await f.lines(f.a)).map((l) => l.progress),
      [1, 2],
    );
  });

  it('refuses a missing or invalid token with 401 and records nothing', async (t) => {
    const f = await startFixture(t);
    const url = `${f.server.url}/v1/report`;
    const body = json({ status: 'completed' });
    const altered = `${f.a.token.slice(0, -1)}${f.a.token.endsWith('A') ? 'B' : 'A'}`;
    const cases: Array<[string, Send, RegExp]> = [
      ['no Authorization', { contentType: 'application/json', body }, /missing Authorization header/],
      ['not Bearer', { contentType: 'application/json', body, headers: { authorization: `Basic ${f.a.token}` } }, /must be "Bearer <token>"/],
      ['wrong token', { token: 'nope', contentType: 'application/json', body }, /invalid report token/],
      ["A's token with its last character changed", { token: altered, contentType: 'application/json', body }, /invalid report token/],
      ["B's uid as the token", { token: f.b.uid, contentType: 'application/json', body }, /invalid report token/],
    ];
    for (const [name, s, error] of cases) {
      const r = await send(url, s);
      assert.equal(r.status, 401, name);
      assert.match(String(r.body.error), error, name);
      assert.match(String(r.headers['www-authenticate']), /^Bearer/, name);
    }
    assert.deepEqual([await f.lines(f.a), await f.lines(f.b)], [[], []]);
    assert.equal(f.reflected.length, 0);
  });

  it("A's token reports for A only: the body cannot name another agent", async (t) => {
    const f = await startFixture(t);
    const r = await reportAs(f, f.a, { status: 'failed', uid: f.b.uid });
    assert.equal(r.status, 400);
    assert.equal(r.body.error, "unknown field 'uid'");
    const ok = await reportAs(f, f.a, { status: 'blocked', message: 'needs input' });
    assert.equal(ok.status, 202);
    assert.equal((await f.lines(f.a)).length, 1);
    assert.deepEqual(await f.lines(f.b), []);
    assert.deepEqual(
      f.reflected.map((x) => x.uid),
      [f.a.uid],
    );
  });

  it('refuses an oversized body with 413 without reading it, and stays healthy', async (t) => {
    const f = await startFixture(t);
    const url = `${f.server.url}/v1/report`;
    const padding = 'x'.repeat(MAX_BODY_BYTES);
    const oversized = json({ status: 'working', message: padding });
    const declared = await send(url, { token: f.a.token, contentType: 'application/json', body: oversized });
    const streamed = await send(url, { token: f.a.token, contentType: 'application/json', body: Buffer.alloc(4 * 1024 * 1024, 0x20), chunked: true });
    for (const r of [declared, streamed]) {
      assert.equal(r.status, 413);
      assert.match(String(r.body.error), new RegExp(`over the ${MAX_BODY_BYTES} byte limit`));
    }

    // A client that waits for "100 Continue" is refused before it sends a byte of its body.
    const early = await new Promise<{ status: number; continued: boolean }>((resolve, reject) => {
      let continued = false;
      const req = http.request(url, {
        method: 'POST',
        headers: { authorization: `Bearer ${f.a.token}`, 'content-type': 'application/json', 'content-length': String(10 * 1024 * 1024), expect: '100-continue' },
        signal: AbortSignal.timeout(5_000),
      });
      req.on('continue', () => (continued = true));
      req.on('response', (res) => {
        res.resume();
        resolve({ status: res.statusCode ?? 0, continued });
        req.destroy();
      });
      req.on('error', reject);
      req.flushHeaders();
    });
    assert.deepEqual(early, { status: 413, continued: false });

    assert.equal((await send(`${f.server.url}/healthz`, { method: 'GET' })).status, 200);
    assert.equal((await reportAs(f, f.a, { status: 'working', progress: 7 })).status, 202);
    assert.deepEqual(
      (await f.lines(f.a)).map((l) => l.progress),
      [7],
    );
  });

  it('accepts the largest finding the schema allows', async (t) => {
    const f = await startFixture(t);
    const finding = { type: 't', severity: 'info', message: 'm'.repeat(4096), data: 'd'.repeat(64 * 1024 - 2) };
    const r = await reportAs(f, f.a, finding, '/v1/findings');
    assert.equal(r.status, 202);
    assert.equal((await f.lines(f.a, 'finding')).length, 1);
  });

  it('refuses a body that is not JSON with 415', async (t) => {
    const f = await startFixture(t);
    const url = `${f.server.url}/v1/report`;
    const body = json({ status: 'working' });
    for (const contentType of [undefined, 'text/plain', 'application/x-www-form-urlencoded', 'application/json; charset=latin1']) {
      const r = await send(url, { token: f.a.token, contentType, body });
      assert.equal(r.status, 415, String(contentType));
      assert.match(String(r.body.error), /Content-Type must be application\/json/);
    }
    assert.equal((await send(url, { token: f.a.token, contentType: 'Application/JSON; charset=UTF-8', body })).status, 202);
  });

  it('refuses malformed and invalid bodies with 400 naming the problem', async (t) => {
    const f = await startFixture(t);
    const url = `${f.server.url}/v1/report`;
    const cases: Array<[string | Buffer, RegExp]> = [
      ['{"status": "working",', /^body is not valid JSON/],
      ['', /^body is not valid JSON/],
      [Buffer.from([0x7b, 0xff, 0x7d]), /^body is not valid UTF-8$/],
      ['[]', /^body: must be a JSON object/],
      [json({ status: 'working', progress: 140 }), /^progress: must be an integer from 0 to 100$/],
      [json({ status: 'finished' }), /^status: must be one of working, blocked, completed, failed, error$/],
    ];
    for (const [body, error] of cases) {
      const r = await send(url, { token: f.a.token, contentType: 'application/json', body });
      assert.equal(r.status, 400, String(body));
      assert.match(String(r.body.error), error);
    }
    const finding = await reportAs(f, f.a, { type: 'x', severity: 'urgent', message: 'm' }, '/v1/findings');
    assert.equal(finding.status, 400);
    assert.match(String(finding.body.error), /^severity: must be one of info, low, medium, high, critical$/);
    assert.deepEqual(await f.lines(f.a), []);
  });

  it('answers 404 for an unknown path and 405 for a wrong method', async (t) => {
    const f = await startFixture(t);
    const missing = await send(`${f.server.url}/v1/status`, { token: f.a.token });
    assert.equal(missing.status, 404);
    assert.match(String(missing.body.error), /no such endpoint: \/v1\/status/);
    const wrong = await send(`${f.server.url}/v1/report`, { method: 'GET', token: f.a.token });
    assert.equal(wrong.status, 405);
    assert.equal(wrong.headers.allow, 'POST');
    assert.equal((await send(`${f.server.url}/healthz`, { method: 'POST' })).status, 405);
  });

  it('refuses reports after the agent ended with 409', async (t) => {
    const f = await startFixture(t);
    assert.equal((await reportAs(f, f.a, { status: 'completed' })).status, 202);
    f.a.acceptingReports = false;
    const late = await reportAs(f, f.a, { status: 'working', progress: 99 });
    assert.equal(late.status, 409);
    assert.equal(late.body.error, `agent ${f.a.uid} has ended and no longer accepts reports`);
    const lateFinding = await reportAs(f, f.a, { type: 't', severity: 'low', message: 'm' }, '/v1/findings');
    assert.equal(lateFinding.status, 409);
    assert.deepEqual(
      (await f.lines(f.a)).map((l) => l.status),
      ['completed'],
    );
    assert.equal((await reportAs(f, f.b, { status: 'working' })).status, 202, 'other agents are unaffected');
  });

  it('after acceptingReports turns false, whenIdle() resolves only once every accepted report is written', async (t) => {
    let linesWhenIdle = -1;
    const f: Fixture = await startFixture(t, {
      onStatus: async (ctx, report) => {
        if (report.progress !== 5) return;
        // What cleanup does: stop accepting, then wait for what was accepted before archiving.
        ctx.acceptingReports = false;
        await f.server.whenIdle(ctx.uid);
        linesWhenIdle = (await f.lines(ctx)).length;
      },
    });
    const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => reportAs(f, f.a, { status: 'working', progress: i })));
    const accepted = answers.filter((r) => r.status === 202).length;
    // How many slipped in before the switch depends on timing; that none is written after whenIdle does not.
    assert.ok(answers.every((r) => r.status === 202 || r.status === 409));
    assert.equal((await reportAs(f, f.a, { status: 'working', progress: 21 })).status, 409);
    assert.equal(linesWhenIdle, accepted);
    assert.equal((await f.lines(f.a)).length, accepted);
  });

  it('records concurrent reports from several agents completely, in order per agent', async (t) => {
    const f = await startFixture(t);
    const n = 30;
    const answers = await Promise.all(
      Array.from({ length: n }, (_, i) => [
        reportAs(f, f.a, { status: 'working', progress: i, message: `a${i}` }),
        reportAs(f, f.b, { status: 'working', progress: i, message: `b${i}` }),
        reportAs(f, f.a, { type: 'note', severity: 'info', message: `fa${i}` }, '/v1/findings'),
      ]).flat(),
    );
    assert.ok(answers.every((r) => r.status === 202));
    for (const [agent, kind] of [
      [f.a, 'status'],
      [f.b, 'status'],
      [f.a, 'finding'],
    ] as const) {
      const lines = await f.lines(agent, kind);
      assert.equal(lines.length, n);
      const times = lines.map((l) => Date.parse(String(l.at)));
      assert.deepEqual(
        times,
        [...times].sort((x, y) => x - y),
        'file order is the order the server accepted them',
      );
      assert.deepEqual(new Set(lines.map((l) => l.message)).size, n, 'every report exactly once');
      // Callbacks saw this agent's records in the same order as the file holds them.
      const seen = f.reflected.filter((r) => r.uid === agent.uid && r.kind === kind).map((r) => r.report.message);
      assert.deepEqual(
        seen,
        lines.map((l) => l.message),
      );
    }
  });

  it('answers 500 and writes nothing through a symlink planted in place of the file', async (t) => {
    const f = await startFixture(t);
    const target = join(f.b.workspaceDir, 'victim');
    await writeFile(target, 'untouched\n');
    await symlink(target, join(f.a.workspaceDir, RECORD_FILES.status));
    const r = await reportAs(f, f.a, { status: 'working' });
    assert.equal(r.status, 500);
    assert.match(String(r.body.error), /^could not record the report/);
    assert.equal(await readFile(target, 'utf8'), 'untouched\n');
    assert.equal(f.reflected.length, 0, 'nothing unrecorded is reflected');
  });

  it('closes connections of clients that stall in their headers or body', async (t) => {
    const f = await startFixture(t, { headersTimeoutMs: 300, requestTimeoutMs: 600 });
    const { port } = f.server;
    const stall = (data: string) =>
      new Promise<{ ms: number; answer: string }>((resolve, reject) => {
        const started = Date.now();
        let answer = '';
        const socket = net.connect(port, '127.0.0.1', () => socket.write(data));
        socket.setTimeout(5_000, () => {
          socket.destroy();
          reject(new Error('the server kept a stalled connection open'));
        });
        socket.on('data', (c) => (answer += c.toString()));
        socket.on('error', () => undefined);
        socket.on('close', () => resolve({ ms: Date.now() - started, answer }));
      });
    const [headers, body] = await Promise.all([
      stall('POST /v1/report HTTP/1.1\r\nHost: x\r\n'),
      stall(`POST /v1/report HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${f.a.token}\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n{"sta`),
    ]);
    for (const s of [headers, body]) assert.ok(s.ms < 3_000, `closed after ${s.ms} ms`);
    assert.match(headers.answer, /^HTTP\/1\.1 408/);
    // A body that stops coming: the request was already handed over, so node just drops the connection.
    assert.equal(body.answer, '');
    assert.deepEqual(await f.lines(f.a), []);
  });
});

describe('report CLI as a child process against the real server', () => {
  const cli = (f: Fixture, agent: Agent | undefined, args: string[], env: Record<string, string> = {}) =>
    execa(process.execPath, [CLI_MAIN, ...args], {
      env: { AGENT_REPORT_URL: f.server.url, ...(agent ? { AGENT_REPORT_TOKEN: agent.token } : {}), ...env },
      extendEnv: false,
      reject: false,
      timeout: 20_000,
    });

  it('records status reports in the order they were made, and a finding', async (t) => {
    const f = await startFixture(t);
    for (const [status, progress] of [
      ['working', '10'],
      ['blocked', '20'],
      ['working', '80'],
    ] as const) {
      const r = await cli(f, f.a, ['--status', status, '--progress', progress, '--message', `at ${progress}`]);
      assert.equal(r.exitCode, 0, r.stderr);
      assert.match(r.stdout, /^recorded at \d{4}-\d\d-\d\dT/);
    }
    const finding = await cli(f, f.a, ['finding', '--type', 'todo', '--severity', 'low', '--message', 'tests missing', '--data', '{"dir":"src"}']);
    assert.equal(finding.exitCode, 0, finding.stderr);
    const lines = await f.lines(f.a);
    assert.deepEqual(
      lines.map(({ at: _, ...rest }) => rest),
      [
        { status: 'working', progress: 10, message: 'at 10' },
        { status: 'blocked', progress: 20, message: 'at 20' },
        { status: 'working', progress: 80, message: 'at 80' },
      ],
    );
    assert.deepEqual(
      (await f.lines(f.a, 'finding')).map(({ at: _, ...rest }) => rest),
      [{ type: 'todo', severity: 'low', message: 'tests missing', data: { dir: 'src' } }],
    );
  });

  it("exits 1 and prints the server's error when refused", async (t) => {
    const f = await startFixture(t);
    f.a.acceptingReports = false;
    const ended = await cli(f, f.a, ['--status', 'completed']);
    assert.equal(ended.exitCode, 1);
    assert.match(ended.stderr, /refused \(HTTP 409\): agent .* has ended and no longer accepts reports/);
    const badToken = await cli(f, undefined, ['--status', 'completed'], { AGENT_REPORT_TOKEN: 'stolen' });
    assert.equal(badToken.exitCode, 1);
    assert.match(badToken.stderr, /refused \(HTTP 401\): invalid report token/);
    assert.deepEqual(await f.lines(f.a), []);
  });

  it('exits 2 naming the bad flag or missing variable, without contacting the server', async (t) => {
    const f = await startFixture(t);
    const bad = await cli(f, f.a, ['--status', 'working', '--progress', '150']);
    assert.equal(bad.exitCode, 2);
    assert.match(bad.stderr, /--progress: must be an integer from 0 to 100/);
    const noToken = await cli(f, undefined, ['--status', 'working']);
    assert.equal(noToken.exitCode, 2);
    assert.match(noToken.stderr, /AGENT_REPORT_TOKEN is not set/);
    assert.deepEqual(await f.lines(f.a), []);
  });

  it('exits 3 after retrying when nothing listens', async (t) => {
    const f = await startFixture(t);
    await f.server.close();
    const started = Date.now();
    const r = await cli(f, f.a, ['--status', 'working']);
    assert.equal(r.exitCode, 3);
    assert.equal(r.stderr.match(/ECONNREFUSED/g)?.length, 3, r.stderr);
    assert.ok(Date.now() - started >= 2_000, 'it waited between attempts');
  });
});

/** A channel directory as the launch makes it: root:<gid>, 0750, under directories others may pass. */
async function channelDir(agent: Agent, gid: number): Promise<string> {
  const dir = join(agent.workspaceDir, 'channel');
  await mkdir(dir, { recursive: true });
  await chown(dir, 0, gid);
  await chmod(dir, 0o750);
  for (const d of [agent.workspaceDir, join(agent.workspaceDir, '..')]) await chmod(d, 0o711);
  return dir;
}

/**
 * The socket's path through a short link to its directory: a client's sun_path holds 107 bytes and
 * test roots are deep (the sidecar binds through a descriptor; agents use their short fixed path).
 */
async function reachable(t: TestContext, sock: string): Promise<string> {
  const link = join('/tmp', `aoch-${process.pid}-${Math.random().toString(36).slice(2, 8)}`);
  await symlink(dirname(sock), link);
  t.after(() => rm(link, { force: true }));
  return join(link, basename(sock));
}

const overSocket = (socketPath: string, body: unknown, extra: Send = {}, path = '/v1/report') =>
  send(`http://agent${path}`, { socketPath, contentType: 'application/json', body: json(body), ...extra });

describe('report channel: one unix socket per agent', () => {
  const GID = 300_777;

  it("a request on an agent's socket is that agent's, without a token; a token sent there changes nothing", async (t) => {
    const f = await startFixture(t);
    const path = await f.server.openChannel(f.a.uid, await channelDir(f.a, GID), GID);
    assert.equal(path, join(f.a.workspaceDir, 'channel', 'report.sock'));
    const sock = await reachable(t, path);
    const st = await stat(sock);
    assert.ok(st.isSocket());
    assert.deepEqual([st.uid, st.gid, (st.mode & 0o777).toString(8)], [0, GID, '660']);
    assert.equal(await f.server.openChannel(f.a.uid, join(f.a.workspaceDir, 'channel'), GID), path, 'opening again is a no-op');

    assert.equal((await overSocket(sock, { status: 'working', progress: 5 })).status, 202);
    assert.equal((await overSocket(sock, { status: 'working', progress: 6 }, { token: f.b.token })).status, 202);
    assert.deepEqual(
      (await f.lines(f.a)).map((l) => l.progress),
      [5, 6],
    );
    assert.deepEqual(await f.lines(f.b), [], "B's token on A's socket reports for A, never for B");
  });

  it("the kernel lets only the agent's gid connect (the check SO_PEERCRED would make)", async (t) => {
    const f = await startFixture(t);
    // Directly under /tmp: every directory above it lets others pass, as the node root's do.
    const top = await mkdtemp('/tmp/aoch-');
    t.after(() => rm(top, { recursive: true, force: true }));
    await chmod(top, 0o711);
    const dir = join(top, 'channel');
    await mkdir(dir);
    await chown(dir, 0, GID);
    await chmod(dir, 0o750);
    const sock = await f.server.openChannel(f.a.uid, dir, GID);
    const curlAs = (id: number) =>
      execa(
        'setpriv',
        [
          `--reuid=${id}`,
          `--regid=${id}`,
          '--clear-groups',
          '--',
          'curl',
          '-sS',
          '--max-time',
          '10',
          '--unix-socket',
          sock,
          '-H',
          'Content-Type: application/json',
          '-d',
          '{"status":"working","progress":7}',
          'http://agent/v1/report',
        ],
        { reject: false, timeout: 20_000 },
      );
    const own = await curlAs(GID);
    assert.equal(own.exitCode, 0, own.stderr);
    assert.match(own.stdout, /"accepted":true/);
    const other = await curlAs(GID + 1);
    assert.notEqual(other.exitCode, 0);
    assert.match(other.stderr, /Permission denied|Couldn't connect|Failed to connect/);
    assert.deepEqual(
      (await f.lines(f.a)).map((l) => l.progress),
      [7],
    );
  });

  it('closing removes the socket; reopening replaces one a crashed sidecar left; a file in its place is refused', async (t) => {
    const f = await startFixture(t);
    const dir = await channelDir(f.a, GID);
    const sock = await reachable(t, await f.server.openChannel(f.a.uid, dir, GID));
    await f.server.closeChannel(f.a.uid);
    await assert.rejects(stat(sock), { code: 'ENOENT' });
    await assert.rejects(overSocket(sock, { status: 'working' }), { code: 'ENOENT' });
    await f.server.closeChannel(f.a.uid);

    // A listener SIGKILLed leaves its socket file behind, as a crashed sidecar does.
    const stale = await execa(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(sock)}, () => process.kill(process.pid, 'SIGKILL'))`], {
      reject: false,
      timeout: 20_000,
    });
    assert.equal(stale.signal, 'SIGKILL');
    assert.ok((await stat(sock)).isSocket(), 'the stale socket is there');
    await assert.rejects(overSocket(sock, { status: 'working' }), { code: 'ECONNREFUSED' });
    await f.server.openChannel(f.a.uid, dir, GID);
    assert.equal((await overSocket(sock, { status: 'working', progress: 9 })).status, 202);
    await f.server.closeChannel(f.a.uid);

    await writeFile(sock, 'not a socket');
    await assert.rejects(f.server.openChannel(f.a.uid, dir, GID), /report\.sock exists and is not a socket; not replacing it/);
    assert.equal(await readFile(sock, 'utf8'), 'not a socket');
  });

  it('a socket whose agent the node does not know answers 503, and records nothing', async (t) => {
    const f = await startFixture(t);
    const dir = join(f.a.workspaceDir, 'unknown-channel');
    await mkdir(dir);
    const sock = await reachable(t, await f.server.openChannel('cccccccc-0000-0000-0000-000000000003', dir, undefined));
    assert.equal(((await stat(sock)).mode & 0o777).toString(8), '600', "no sandbox: the sidecar's alone");
    const r = await overSocket(sock, { status: 'working' });
    assert.equal(r.status, 503);
    assert.equal(r.headers['retry-after'], '1');
    assert.match(String(r.body.error), /does not know agent cccccccc-0000-0000-0000-000000000003 yet/);
  });

  it('caps reports and bytes per agent with 429 and Retry-After; the other agent and the server carry on', async (t) => {
    const capped: string[] = [];
    const f = await startFixture(t, { caps: { maxPerMinute: 3, maxBytesPerMinute: MAX_BODY_BYTES }, onCapped: (kind) => void capped.push(kind) });
    const sock = await reachable(t, await f.server.openChannel(f.a.uid, await channelDir(f.a, GID), GID));
    const answers = [];
    for (let i = 0; i < 5; i++) answers.push(await overSocket(sock, { status: 'working', progress: i }));
    assert.deepEqual(
      answers.map((a) => a.status),
      [202, 202, 202, 429, 429],
    );
    assert.match(String(answers[3]!.body.error), /^report rate cap reached: this agent may send at most 3 reports per minute; retry in \d+ s$/);
    assert.ok(Number(answers[3]!.headers['retry-after']) >= 1);
    assert.deepEqual(
      (await f.lines(f.a)).map((l) => l.progress),
      [0, 1, 2],
    );
    // Over its token too: the cap is the agent's, not the transport's.
    assert.equal((await reportAs(f, f.a, { status: 'working' })).status, 429);
    assert.equal((await reportAs(f, f.b, { status: 'working', progress: 1 })).status, 202, "B's caps are its own");

    // Bytes: B's first large finding fits the bytes cap, the second does not.
    const big = { type: 'dump', severity: 'info', message: 'm', data: 'x'.repeat(60_000) };
    assert.equal((await reportAs(f, f.b, big, '/v1/findings')).status, 202);
    const over = await reportAs(f, f.b, big, '/v1/findings');
    assert.equal(over.status, 429);
    assert.match(String(over.body.error), new RegExp(`^report bytes cap reached: this agent may send at most ${MAX_BODY_BYTES} bytes of reports per minute`));
    assert.equal((await f.lines(f.b, 'finding')).length, 1);
    assert.deepEqual(capped, ['rate', 'rate', 'rate', 'bytes']);
    assert.equal((await send(`${f.server.url}/healthz`, { method: 'GET' })).status, 200);
  });

  it('the CLI reports over AGENT_REPORT_SOCKET and prints a refusal for a cap', async (t) => {
    const f = await startFixture(t, { caps: { maxPerMinute: 1, maxBytesPerMinute: MAX_BODY_BYTES } });
    const sock = await reachable(t, await f.server.openChannel(f.a.uid, await channelDir(f.a, GID), GID));
    const cli = () => execa(process.execPath, [CLI_MAIN, '--status', 'working', '--progress', '42'], { env: { AGENT_REPORT_SOCKET: sock }, extendEnv: false, reject: false, timeout: 20_000 });
    const ok = await cli();
    assert.equal(ok.exitCode, 0, ok.stderr);
    assert.match(ok.stdout, /^recorded at /);
    const refused = await cli();
    assert.equal(refused.exitCode, 1);
    assert.match(refused.stderr, /refused \(HTTP 429\): report rate cap reached: this agent may send at most 1 reports per minute/);
    assert.deepEqual(
      (await f.lines(f.a)).map((l) => l.progress),
      [42],
    );
    await f.server.closeChannel(f.a.uid);
    const gone = await execa(process.execPath, [CLI_MAIN, '--status', 'working'], { env: { AGENT_REPORT_SOCKET: sock }, extendEnv: false, reject: false, timeout: 20_000 });
    assert.equal(gone.exitCode, 3);
    assert.match(gone.stderr, new RegExp(`cannot reach the report socket ${sock.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(ENOENT\\) after 3 attempts`));
  });
});
