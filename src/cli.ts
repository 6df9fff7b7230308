#!/usr/bin/env node
/** One binary, several entrypoints: each subcommand lives in its own module, loaded on demand. */

import { UsageError } from './cmd/flags.js';

interface Command {
  summary: string;
  run: (argv: string[]) => Promise<number | void>;
}

const commands: Record<string, Command> = {
  controller: {
    summary: 'run the Agent controller (scheduling, deadlines, phases, the cleanup finalizer)',
    run: async (argv) => (await import('./cmd/controller.js')).runController(argv),
  },
  sidecar: {
    summary: 'run the node sidecar: launches Agents bound to this node in tmux and cleans them up',
    run: async (argv) => (await import('./cmd/sidecar.js')).runSidecar(argv),
  },
  supervise: {
    summary: 'run another command and restart it when it crashes (the sidecar in a pod)',
    run: async (argv) => (await import('./cmd/supervise.js')).runSupervise(argv),
  },
  dev: {
    summary: 'run the local stack: control plane, CRDs, controller and N simulated nodes',
    run: async (argv) => (await import('./dev/devCommand.js')).runDev(argv),
  },
  demo: {
    summary: 'run the example Agents on a local stack and show what happens to them',
    run: async (argv) => (await import('./dev/demo.js')).runDemo(argv),
  },
  'ensure-binaries': {
    summary: 'build or locate etcd, kube-apiserver, kube-controller-manager and kubectl',
    run: async (argv) => (await import('./dev/binariesCommand.js')).runEnsureBinaries(argv),
  },
  image: {
    summary: 'build the image from a checkout without a Docker engine (buildah, debootstrap; root)',
    run: async (argv) => (await import('./dev/imageCommand.js')).runImage(argv),
  },
  report: {
    summary: 'report progress or a finding from inside an agent session',
    run: async (argv) => (await import('./report/cli.js')).runReport(argv),
  },
  mcp: {
    summary: 'MCP server on stdio for the agent in a session: progress, findings and child agents',
    run: async (argv) => (await import('./mcp/server.js')).runMcp(argv),
  },
};

function usage(): string {
  const lines = Object.entries(commands).map(([name, c]) => `  ${name.padEnd(12)} ${c.summary}`);
  return [
    'Usage: agent-operator <command> [options]',
    '',
    'Runs AI coding agents in tmux sessions on cluster nodes, declared as Agent custom resources.',
    '',
    'Commands:',
    ...lines,
    '',
    "Run 'agent-operator <command> --help' for a command's options.",
  ].join('\n');
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    console.log(usage());
    return 0;
  }
  const command = commands[name];
  if (!command) {
    console.error(`agent-operator: unknown command '${name}'\n\n${usage()}`);
    return 2;
  }
  const code = await command.run(rest);
  return typeof code === 'number' ? code : 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    console.error(`agent-operator: ${err instanceof Error ? err.message : String(err)}`);
    process.exitCode = err instanceof UsageError ? 2 : 1;
  },
);
