import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import nock from 'nock';
import { callTool, inputSchemaOf, TOOLS } from '../../src/mcp/server.js';

const BASE = 'http://127.0.0.1:7071';
const env = { AGENT_REPORT_URL: BASE, AGENT_REPORT_TOKEN: 'tok' };
const opts = { env, spawnTimeoutMs: 300, spawnPollMs: 20 };
const endpoint = () => nock(BASE, { reqheaders: { authorization: 'Bearer tok' } });
const text = (r: Awaited<ReturnType<typeof callTool>>) => r.content.map((c) => (c.type === 'text' ? c.text : '')).join('');
const noChildren = { active: 0, succeeded: 0, failed: 0, children: [], refused: [], pending: [] };

describe('MCP tools', () => {
  before(() => nock.disableNetConnect());
  afterEach(() => nock.cleanAll());
  after(() => nock.enableNetConnect());

  it('lists the six tools, each with an object input schema free of CRD-only keys', () => {
    assert.deepEqual(
      TOOLS.map((t) => t.name),
      ['update_agent_progress', 'report_agent_finding', 'spawn_child_agent', 'get_child_agents', 'get_agent_output', 'stop_child_agent'],
    );
    for (const t of TOOLS) {
      const s = inputSchemaOf(t.schema);
      assert.equal(s.type, 'object', t.name);
      assert.doesNotMatch(JSON.stringify(s), /x-kubernetes|\$schema/, t.name);
    }
    assert.deepEqual((inputSchemaOf(TOOLS[2]!.schema).required as string[]).sort(), ['command', 'name', 'prompt']);
  });

  const bad: { tool: string; args: unknown; error: RegExp }[] = [
    { tool: 'update_agent_progress', args: { status: 'done' }, error: /^invalid input for update_agent_progress: status: must be one of working, blocked, completed, failed, error$/ },
    { tool: 'report_agent_finding', args: { type: 'x', severity: 'high', message: 'm', extra: 1 }, error: /unknown field 'extra'/ },
    { tool: 'spawn_child_agent', args: { name: 'a', prompt: 'p', command: ['x'], nodeName: 'elsewhere' }, error: /unknown field 'nodeName'/ },
    // A child cannot widen its limits: the platform sets them, the tool has no such field.
    { tool: 'spawn_child_agent', args: { name: 'a', prompt: 'p', command: ['x'], children: { maxTotal: 32, maxConcurrent: 32, maxDepth: 8 } }, error: /unknown field 'children'/ },
    { tool: 'spawn_child_agent', args: { name: 'a', prompt: 'p', command: ['x'], env: [{ name: 'S', valueFrom: { secretKeyRef: { name: 's', key: 'k' } } }] }, error: /unknown field 'valueFrom'/ },
    { tool: 'spawn_child_agent', args: { name: 'a', prompt: 'p'.repeat(20_000), command: ['x'] }, error: /prompt: Too big/ },
    { tool: 'spawn_child_agent', args: { name: 'a', prompt: 'p', command: ['x'], output: { maxSize: 'lots' } }, error: /output\.maxSize: / },
    { tool: 'get_agent_output', args: { name: 'a', tail: 5000 }, error: /tail: must be an integer from 1 to 1000/ },
    { tool: 'stop_child_agent', args: {}, error: /name: must be a string/ },
    { tool: 'nope', args: {}, error: /^unknown tool 'nope': the tools are update_agent_progress, / },
  ];
  for (const c of bad) {
    it(`bad input to ${c.tool} is a tool error naming the field, and nothing is sent`, async () => {
      const r = await callTool(c.tool, c.args, opts); // nock refuses any request: one would fail differently
      assert.equal(r.isError, true);
      assert.match(text(r), c.error);
    });
  }

  it('update_agent_progress posts the report', async () => {
    const scope = endpoint().post('/v1/report', { status: 'working', progress: 5 }).reply(202, { accepted: true, at: '2026-11-25T10:00:00.000Z' });
    const r = await callTool('update_agent_progress', { status: 'working', progress: 5 }, opts);
    assert.equal(text(r), 'recorded at 2026-11-25T10:00:00.000Z');
    assert.ok(scope.isDone());
  });

  it("the node's refusal is a tool error with its message", async () => {
    endpoint().post('/v1/children/stop').reply(404, { error: "name: 'x' is not a child of lead (its children: none)" });
    const r = await callTool('stop_child_agent', { name: 'x' }, opts);
    assert.equal(r.isError, true);
    assert.equal(text(r), "stop_child_agent: refused (HTTP 404): name: 'x' is not a child of lead (its children: none)");
  });

  it('outside a session: a tool error saying what is missing', async () => {
    const r = await callTool('get_child_agents', {}, { ...opts, env: {} });
    assert.match(text(r), /neither AGENT_REPORT_SOCKET nor AGENT_REPORT_URL is set/);
  });

  it('spawn_child_agent waits for the controller: created', async () => {
    endpoint().post('/v1/children/spawn').reply(200, { name: 'lead-a', requestTime: 'T1' });
    endpoint()
      .post('/v1/children/list')
      .reply(200, { ...noChildren, pending: ['lead-a'] });
    endpoint()
      .post('/v1/children/list')
      .reply(200, { ...noChildren, active: 1, children: [{ name: 'lead-a', phase: 'Pending' }] });
    const r = await callTool('spawn_child_agent', { name: 'a', prompt: 'p', command: ['x'] }, opts);
    assert.equal(r.isError, undefined);
    assert.deepEqual(JSON.parse(text(r)), { name: 'lead-a', phase: 'Pending', message: 'child Agent lead-a created' });
  });

  it('spawn_child_agent: a refusal of this request is a tool error naming the field; one of an older request is not', async () => {
    endpoint().post('/v1/children/spawn').reply(200, { name: 'lead-a', requestTime: 'T2' });
    endpoint()
      .post('/v1/children/list')
      .reply(200, { ...noChildren, refused: [{ name: 'lead-a', requestTime: 'T1', field: 'spec.children.maxTotal', message: 'old' }] });
    endpoint()
      .post('/v1/children/list')
      .reply(200, { ...noChildren, refused: [{ name: 'lead-a', requestTime: 'T2', field: 'spec.children.maxConcurrent', message: 'spec.children.maxConcurrent is 1 and 1 children are active' }] });
    const r = await callTool('spawn_child_agent', { name: 'a', prompt: 'p', command: ['x'] }, opts);
    assert.equal(r.isError, true);
    assert.equal(text(r), 'spawn_child_agent: refused: spec.children.maxConcurrent: spec.children.maxConcurrent is 1 and 1 children are active');
  });

  it('spawn_child_agent: no answer in time is a tool error saying the request stands', async () => {
    endpoint().post('/v1/children/spawn').reply(200, { name: 'lead-a', requestTime: 'T1' });
    endpoint()
      .post('/v1/children/list')
      .times(100)
      .reply(200, { ...noChildren, pending: ['lead-a'] });
    const r = await callTool('spawn_child_agent', { name: 'a', prompt: 'p', command: ['x'] }, opts);
    assert.equal(r.isError, true);
    assert.match(text(r), /has not answered the request for lead-a within 0s; it stands/);
  });
});
