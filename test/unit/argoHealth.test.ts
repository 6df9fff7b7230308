/** The Lua harness itself: any string survives the trip into a Lua table and back (lua5.1, real). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { execa } from 'execa';
import { toLua } from '../support/argoHealth.js';

/** Splits `<byte length>:<bytes>` records. */
function records(buf: Buffer): string[] {
  const out: string[] = [];
  for (let i = 0; i < buf.length; ) {
    const colon = buf.indexOf(':', i);
    const len = Number(buf.subarray(i, colon).toString());
    out.push(buf.subarray(colon + 1, colon + 1 + len).toString('utf8'));
    i = colon + 1 + len;
  }
  return out;
}

test('toLua: strings with quotes, backslashes, newlines, control bytes and UTF-8 come back unchanged', async () => {
  const values = ['plain', 'say "hi"', 'C:\\path\\', 'two\nlines\r\n', 'tab\there', 'nul\x00byte1', '\x1b[31mred', 'müde ✓', '[[long]]', ''];
  const obj = { items: values, nested: { n: 3, f: 1.5, t: true, none: null } };
  const script = `local obj = ${toLua(obj)}
for _, v in ipairs(obj.items) do io.write(#v, ":", v) end
local n = obj.nested
local summary = table.concat({tostring(n.n), tostring(n.f), tostring(n.t), tostring(n.none), tostring(#obj.items)}, " ")
io.write(#summary, ":", summary)`;
  const r = await execa('lua5.1', ['-'], { input: script, timeout: 10_000, encoding: 'buffer' });
  const got = records(Buffer.from(r.stdout));
  assert.equal(got.pop(), `3 1.5 true nil ${values.length}`);
  assert.deepEqual(got, values);
});
