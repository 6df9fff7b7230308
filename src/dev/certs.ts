/**
 * The local control plane's PKI, made with the openssl CLI: a CA, the API server's serving
 * certificate, client certificates (CN = user, O = groups: how Kubernetes reads them) and the
 * service-account signing key pair. P-256 keys: as good as RSA here and generated instantly.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';

const OPENSSL_TIMEOUT_MS = 30_000;
const DAYS = '3650';
const EC_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

export interface CertPair {
  cert: string;
  key: string;
}

export interface Pki {
  dir: string;
  ca: CertPair;
  apiserver: CertPair;
  serviceAccountKey: string;
  serviceAccountPub: string;
}

async function openssl(args: string[], input?: string): Promise<string> {
  const r = await execa('openssl', args, {
    timeout: OPENSSL_TIMEOUT_MS,
    reject: false,
    ...(input !== undefined ? { input } : {}),
  });
  if (r.failed) {
    const why = (r as { code?: string }).code === 'ENOENT' ? 'openssl is not installed' : r.stderr || r.message;
    throw new Error(`openssl ${args[0]} failed: ${why}`);
  }
  return r.stdout;
}

/** Names that go into a certificate subject; restricted so `-subj` needs no escaping. */
const SUBJECT_VALUE = /^[A-Za-z0-9:._@-]+$/;

function subject(cn: string, orgs: string[]): string {
  for (const v of [cn, ...orgs]) {
    if (!SUBJECT_VALUE.test(v)) throw new Error(`invalid certificate subject value '${v}': use letters, digits and : . _ @ -`);
  }
  return [...orgs.map((o) => `/O=${o}`), `/CN=${cn}`].join('');
}

/** Signs a fresh key's CSR with the CA. `extensions` is an openssl extension section's body. */
async function issue(ca: CertPair, out: CertPair, subj: string, extensions: string[]): Promise<void> {
  const csr = await openssl(['req', '-new', ...EC_KEY, '-keyout', out.key, '-subj', subj]);
  const extFile = `${out.cert}.ext`;
  await writeFile(extFile, `${extensions.join('\n')}\n`);
  await openssl(
    [
      'x509',
      '-req',
      '-in',
      '-',
      '-CA',
      ca.cert,
      '-CAkey',
      ca.key,
      // A random serial per certificate: no shared serial file to race on.
      '-set_serial',
      `0x${randomBytes(16).toString('hex')}`,
      '-days',
      DAYS,
      '-sha256',
      '-extfile',
      extFile,
      '-out',
      out.cert,
    ],
    csr,
  );
}

export async function createPki(dir: string): Promise<Pki> {
  await mkdir(join(dir, 'users'), { recursive: true, mode: 0o700 });
  const ca = { cert: join(dir, 'ca.crt'), key: join(dir, 'ca.key') };
  await openssl([
    'req',
    '-x509',
    ...EC_KEY,
    '-keyout',
    ca.key,
    '-out',
    ca.cert,
    '-days',
    DAYS,
    '-subj',
    '/CN=agent-operator-dev-ca',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign,digitalSignature',
  ]);
  const apiserver = { cert: join(dir, 'apiserver.crt'), key: join(dir, 'apiserver.key') };
  await issue(ca, apiserver, '/CN=kube-apiserver', [
    'basicConstraints=critical,CA:FALSE',
    'keyUsage=critical,digitalSignature,keyEncipherment',
    'extendedKeyUsage=serverAuth',
    'subjectAltName=IP:127.0.0.1,DNS:localhost',
  ]);
  const serviceAccountKey = join(dir, 'sa.key');
  const serviceAccountPub = join(dir, 'sa.pub');
  await openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', serviceAccountKey]);
  await openssl(['pkey', '-in', serviceAccountKey, '-pubout', '-out', serviceAccountPub]);
  return { dir, ca, apiserver, serviceAccountKey, serviceAccountPub };
}

/** The Pki of a state dir created earlier by createPki. */
export function pkiAt(dir: string): Pki {
  return {
    dir,
    ca: { cert: join(dir, 'ca.crt'), key: join(dir, 'ca.key') },
    apiserver: { cert: join(dir, 'apiserver.crt'), key: join(dir, 'apiserver.key') },
    serviceAccountKey: join(dir, 'sa.key'),
    serviceAccountPub: join(dir, 'sa.pub'),
  };
}

/** A client certificate: the API server authenticates it as user `user` in `groups`. */
export async function issueClientCert(pki: Pki, user: string, groups: string[]): Promise<CertPair> {
  const base = join(pki.dir, 'users', `${user.replace(/:/g, '_')}-${randomBytes(4).toString('hex')}`);
  const pair = { cert: `${base}.crt`, key: `${base}.key` };
  await issue(pki.ca, pair, subject(user, groups), ['basicConstraints=critical,CA:FALSE', 'keyUsage=critical,digitalSignature,keyEncipherment', 'extendedKeyUsage=clientAuth']);
  return pair;
}
