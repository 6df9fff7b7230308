/**
 * `npm run image` (node dist/src/dev/imageCommand.js): builds localhost/agent-operator:dev from the
 * Dockerfile with buildah, without a Docker engine; see image.ts.
 */
import { pathToFileURL } from 'node:url';
import { IMAGE, buildImage } from './image.js';
import { stderrLogger } from './logger.js';

const USAGE = `Usage: npm run image [-- --tag NAME] [--quiet]

Builds the Dockerfile with buildah (no Docker engine, no registry) on a stand-in for node:24-slim made
with debootstrap and Node/npm from the npm registry, cached in \${XDG_CACHE_HOME:-~/.cache}/agent-operator/image/.
Needs root, buildah and debootstrap. Default tag: ${IMAGE}. Prints the image ID.`;

export async function runImage(argv: string[]): Promise<number> {
  let tag = IMAGE;
  let quiet = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--help' || a === '-h') {
      console.log(USAGE);
      return 0;
    } else if (a === '--quiet') quiet = true;
    else if (a === '--tag' && argv[i + 1]) tag = argv[++i]!;
    else if (a.startsWith('--tag=')) tag = a.slice('--tag='.length);
    else {
      console.error(`image: unknown argument '${a}'\n\n${USAGE}`);
      return 2;
    }
  }
  const built = await buildImage({ logger: stderrLogger('image'), tag, ...(quiet ? {} : { output: (chunk: string) => process.stderr.write(chunk) }) });
  console.error(`${built.image}: ${Math.round(built.sizeBytes / 1e6)} MB, base ${built.base.name} (${built.base.source}), ${built.seconds.toFixed(1)} s`);
  console.log(built.id);
  return 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  runImage(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      console.error(`image: ${err instanceof Error ? err.message : String(err)}`);
      process.exitCode = 1;
    },
  );
}
