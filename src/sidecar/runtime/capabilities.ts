/**
 * The capabilities the sidecar needs to run agents sandboxed, each with the operation that needs it,
 * and the start-up check that it holds them. The set was measured by running deploy/'s DaemonSet
 * without each one (docs/install.md, "What each privilege is for, measured"); deploy/ adds exactly
 * these (test/unit/deployManifests.test.ts holds the two together). Pure; probeSandbox reads them.
 */
export const SANDBOX_CAPABILITIES = {
  CAP_SETUID: 'setpriv switches each agent to its own uid',
  CAP_SETGID: 'setpriv switches each agent to its own gid and clears its supplementary groups',
  CAP_CHOWN: "each agent's workspace and HOME are handed to its uid, its prompt and report channel to its gid",
  CAP_DAC_OVERRIDE: 'cleanup deletes what an agent left in its workspace and HOME, in directories of its uid, whatever their modes',
  CAP_FOWNER: 'cleanup deletes what an agent left in directories it made sticky',
  CAP_KILL: "stopping an agent sends SIGTERM to its processes, which run as another uid (SIGKILL is the cgroup's cgroup.kill)",
} as const satisfies Record<string, string>;

export type Capability = keyof typeof SANDBOX_CAPABILITIES;

/** Capability names by bit number (linux/capability.h), up to CAP_CHECKPOINT_RESTORE. */
const CAPABILITY_BITS = [
  'CHOWN',
  'DAC_OVERRIDE',
  'DAC_READ_SEARCH',
  'FOWNER',
  'FSETID',
  'KILL',
  'SETGID',
  'SETUID',
  'SETPCAP',
  'LINUX_IMMUTABLE',
  'NET_BIND_SERVICE',
  'NET_BROADCAST',
  'NET_ADMIN',
  'NET_RAW',
  'IPC_LOCK',
  'IPC_OWNER',
  'SYS_MODULE',
  'SYS_RAWIO',
  'SYS_CHROOT',
  'SYS_PTRACE',
  'SYS_PACCT',
  'SYS_ADMIN',
  'SYS_BOOT',
  'SYS_NICE',
  'SYS_RESOURCE',
  'SYS_TIME',
  'SYS_TTY_CONFIG',
  'MKNOD',
  'LEASE',
  'AUDIT_WRITE',
  'AUDIT_CONTROL',
  'SETFCAP',
  'MAC_OVERRIDE',
  'MAC_ADMIN',
  'SYSLOG',
  'WAKE_ALARM',
  'BLOCK_SUSPEND',
  'AUDIT_READ',
  'PERFMON',
  'BPF',
  'CHECKPOINT_RESTORE',
].map((c) => `CAP_${c}`);

/** The capabilities in a /proc/<pid>/status mask (CapEff: 000001ffffffffff), sorted (pure). */
export function capabilityNames(hexMask: string): string[] {
  if (!/^[0-9a-f]{1,16}$/i.test(hexMask)) throw new Error(`not a capability mask: ${JSON.stringify(hexMask)}`);
  const mask = BigInt(`0x${hexMask}`);
  return CAPABILITY_BITS.filter((_, bit) => (mask >> BigInt(bit)) & 1n).sort();
}

/** The effective capabilities a /proc/<pid>/status text shows (pure). */
export function effectiveCapabilities(status: string): string[] {
  const hex = /^CapEff:\s*([0-9a-f]+)$/im.exec(status)?.[1];
  if (hex === undefined) throw new Error('no CapEff line in the process status');
  return capabilityNames(hex);
}

/** What the sandbox needs and `held` lacks, each with its reason (pure). */
export function missingCapabilities(held: readonly string[]): string[] {
  return (Object.keys(SANDBOX_CAPABILITIES) as Capability[]).filter((c) => !held.includes(c)).map((c) => `${c} (${SANDBOX_CAPABILITIES[c]})`);
}
