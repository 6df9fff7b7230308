import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { capabilityNames, effectiveCapabilities, missingCapabilities, SANDBOX_CAPABILITIES } from '../../src/sidecar/runtime/capabilities.js';

describe('capability masks', () => {
  it('names the bits of a /proc status mask', () => {
    const table: [string, string[]][] = [
      ['0000000000000000', []],
      ['0000000000000001', ['CAP_CHOWN']],
      // deploy/'s sidecar: CHOWN, DAC_OVERRIDE, FOWNER, KILL, SETGID, SETUID
      ['00000000000000eb', ['CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FOWNER', 'CAP_KILL', 'CAP_SETGID', 'CAP_SETUID']],
      ['0000000000200000', ['CAP_SYS_ADMIN']],
      ['0000010000000000', ['CAP_CHECKPOINT_RESTORE']],
    ];
    for (const [mask, names] of table) assert.deepEqual(capabilityNames(mask), names, mask);
    assert.equal(capabilityNames('000001ffffffffff').length, 41, 'every capability up to CAP_CHECKPOINT_RESTORE');
    assert.throws(() => capabilityNames('xyz'), /not a capability mask: "xyz"/);
  });

  it('reads CapEff, not the other sets, from a process status', () => {
    const status = 'Name:\tnode\nCapInh:\t0000000000000000\nCapPrm:\t00000000000000ff\nCapEff:\t0000000000000020\nCapBnd:\t00000000000000ff\n';
    assert.deepEqual(effectiveCapabilities(status), ['CAP_KILL']);
    assert.throws(() => effectiveCapabilities('Name:\tnode\n'), /no CapEff line/);
  });

  it('names each capability the sandbox needs and lacks, with what needs it', () => {
    const all = Object.keys(SANDBOX_CAPABILITIES);
    assert.deepEqual(missingCapabilities(all), []);
    assert.deepEqual(missingCapabilities([...all, 'CAP_SYS_ADMIN']), [], 'more is not refused here (deploy/ is held to exactly these by its own test)');
    const withoutKill = missingCapabilities(all.filter((c) => c !== 'CAP_KILL'));
    assert.equal(withoutKill.length, 1);
    assert.match(withoutKill[0]!, /^CAP_KILL \(stopping an agent sends SIGTERM/);
    assert.deepEqual(
      missingCapabilities([]).map((m) => m.split(' ')[0]),
      all,
    );
  });
});
