/** Free TCP ports on 127.0.0.1, found by binding port 0 and releasing it. */
import { createServer } from 'node:net';

function onePort(): Promise<{ port: number; close: () => Promise<void> }> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      if (address === null || typeof address === 'string') return reject(new Error('no TCP address'));
      resolve({ port: address.port, close: () => new Promise<void>((r) => server.close(() => r())) });
    });
  });
}

/**
 * `n` distinct free ports. All are held open until every one is found, so the kernel cannot hand
 * the same port out twice; another process may still take one after release (callers retry).
 */
export async function freePorts(n: number): Promise<number[]> {
  const held = [];
  try {
    for (let i = 0; i < n; i++) held.push(await onePort());
    return held.map((h) => h.port);
  } finally {
    await Promise.all(held.map((h) => h.close()));
  }
}
