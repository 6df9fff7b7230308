/** Where the package's own files are, from the compiled module's location (dist/src/dev/). */
import { fileURLToPath } from 'node:url';

export const PACKAGE_ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/** The pinned Go wrapper modules the control-plane binaries are built from. */
export const HACK_K8S_DIR = fileURLToPath(new URL('../../../hack/k8s/', import.meta.url));

/** The pinned Go wrapper module of the kstatus check (src/dev/kstatus.ts). */
export const HACK_KSTATUS_DIR = fileURLToPath(new URL('../../../hack/kstatus/', import.meta.url));

export const CRDS_DIR = fileURLToPath(new URL('../../../crds/', import.meta.url));
