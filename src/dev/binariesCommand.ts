/**
 * `agent-operator ensure-binaries` (and `node dist/src/dev/binariesCommand.js` for CI before the
 * CLI is wired): resolves or builds the control-plane binaries and prints where they are.
 */
import { dirname } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ensureBinaries } from './binaries.js';
import { stderrLogger } from './logger.js';

const USAGE = `Usage: agent-operator ensure-binaries [--print-dir]

Finds etcd, kube-apiserver, kube-controller-manager and kubectl (KUBEBUILDER_ASSETS, TEST_ASSET_*,
or the cache under \${XDG_CACHE_HOME:-~/.cache}/agent-operator/k8s/), building them with Go into
the cache when missing. Prints one "name path" line per binary, or with --print-dir only the
directory holding kubectl.`;

export async function runEnsureBinaries(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(USAGE);
    return 0;
  }
  const unknown = argv.filter((a) => a !== '--print-dir');
  if (unknown.length > 0) {
    console.error(`ensure-binaries: unknown argument '${unknown[0]}'\n\n${USAGE}`);
    return 2;
  }
  const bins = await ensureBinaries({ logger: stderrLogger('ensure-binaries') });
  if (argv.includes('--print-dir')) {
    console.log(dirname(bins.kubectl));
    return 0;
  }
  const rows: [string, string | undefined][] = [
    ['etcd', bins.etcd],
    ['kube-apiserver', bins.kubeApiserver],
    ['kube-controller-manager', bins.kubeControllerManager],
    ['kubectl', bins.kubectl],
  ];
  for (const [name, path] of rows) console.log(`${name} ${path ?? '(none)'}`);
  return 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  runEnsureBinaries(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      console.error(`ensure-binaries: ${err instanceof Error ? err.message : String(err)}`);
      process.exitCode = 1;
    },
  );
}
