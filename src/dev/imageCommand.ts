/**
 * `agent-operator image` (`npm run image`): builds localhost/agent-operator:dev from the Dockerfile
 * with buildah, without a Docker engine; see image.ts.
 */
import { IMAGE, buildImage } from './image.js';
import { stderrLogger } from './logger.js';

const USAGE = `Usage: agent-operator image [--tag NAME] [--quiet]    (in a checkout: npm run image)

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
