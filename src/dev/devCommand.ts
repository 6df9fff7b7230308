/** `agent-operator dev`: the whole local stack in the foreground until SIGINT/SIGTERM. */
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { helpText, intFlag, parseFlags, untilSignal, type FlagSpec } from '../cmd/flags.js';
import { runControlPlaneOnly } from './controlPlaneCommand.js';
import { stderrLogger } from './logger.js';
import { Stack } from './stack.js';

const FLAGS: FlagSpec = {
  nodes: { type: 'string', default: '2', help: 'simulated nodes (sidecars), named node-1..node-N' },
  'state-dir': { type: 'string', default: '.state/dev', help: 'where the control plane, node roots, logs and DIR/env live' },
  capacity: { type: 'string', default: '4', help: 'agents per node' },
  'control-plane-only': { type: 'boolean', default: false, help: 'only etcd, kube-apiserver, kube-controller-manager and the CRDs' },
};

const USAGE =
  'Usage: agent-operator dev [--nodes N] [--state-dir DIR] [--control-plane-only]\n\nStarts a local control plane, the CRDs and RBAC from deploy/, the controller and N node sidecars; writes DIR/env\n(`source DIR/env` points kubectl at it). Ctrl-C stops everything it started.';

export async function runDev(argv: string[]): Promise<number> {
  const flags = parseFlags(argv, FLAGS);
  if (flags.help) {
    console.log(helpText(USAGE, FLAGS));
    return 0;
  }
  const stateDir = resolve(String(flags['state-dir']));
  if (flags['control-plane-only']) return runControlPlaneOnly({ stateDir });
  const nodes = intFlag(flags, 'nodes', 1, 32);
  const capacity = intFlag(flags, 'capacity', 1, 1000);
  const logger = stderrLogger('dev');
  const signal = untilSignal();
  const stack = await Stack.start({ stateDir, logger, nodes, capacity });
  try {
    console.log((await readFile(stack.envPath, 'utf8')).trimEnd());
    console.log(`# ready: ${nodes} node(s); logs in ${stateDir}/logs; Ctrl-C stops everything`);
    const sig = await signal.promise;
    logger.info({ signal: sig }, 'stopping the stack');
  } finally {
    signal.dispose();
    await stack.stop();
  }
  return 0;
}
