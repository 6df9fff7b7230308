/** Self-contained kubeconfig files (credentials embedded) for the local control plane's users. */
import { readFile, writeFile } from 'node:fs/promises';
import { stringify } from 'yaml';

export type Credentials = { certFile: string; keyFile: string } | { token: string };

const b64 = async (path: string) => (await readFile(path)).toString('base64');

export async function renderKubeconfig(opts: { server: string; caFile: string; user: string; credentials: Credentials; namespace?: string }): Promise<string> {
  const user =
    'token' in opts.credentials
      ? { token: opts.credentials.token }
      : {
          'client-certificate-data': await b64(opts.credentials.certFile),
          'client-key-data': await b64(opts.credentials.keyFile),
        };
  const context = 'agent-operator-dev';
  return stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: context, cluster: { server: opts.server, 'certificate-authority-data': await b64(opts.caFile) } }],
    users: [{ name: opts.user, user }],
    contexts: [{ name: context, context: { cluster: context, user: opts.user, ...(opts.namespace ? { namespace: opts.namespace } : {}) } }],
    'current-context': context,
  });
}

/** Writes a kubeconfig readable by its owner only (it holds a private key or a token). */
export async function writeKubeconfig(path: string, opts: Parameters<typeof renderKubeconfig>[0]): Promise<string> {
  await writeFile(path, await renderKubeconfig(opts), { mode: 0o600 });
  return path;
}
