/**
 * One agent's report channel: a unix socket the sidecar listens on in a node-owned directory
 * (root:<agent gid>, 0750) that is bound into that agent's sandbox only. The socket is root:<agent
 * gid>, 0660: the kernel lets only the agent's gid (and root) connect, and checks it at connect(2)
 * against the connecting process's credentials, which is what SO_PEERCRED would report (node has no
 * getsockopt, and /proc/net/unix shows no peer). Which socket a request came in on says which agent
 * sent it; nobody but the sidecar can create or replace it (the directory is not the agent's).
 */
import { constants } from 'node:fs';
import { chmod, chown, lstat, open, unlink } from '../sidecar/runtime/boundedFs.js';
import net from 'node:net';
import { join } from 'node:path';
import { REPORT_SOCKET_NAME } from '../api/constants.js';

export interface Channel {
  /** The socket's path on the node. */
  path: string;
  close(): Promise<void>;
}

const errno = (err: unknown) => (err as NodeJS.ErrnoException | undefined)?.code;

/** Removes a socket a crashed sidecar left (nothing else: the directory holds only the socket). */
async function removeStale(path: string): Promise<void> {
  try {
    const st = await lstat(path);
    if (!st.isSocket()) throw new Error(`${path} exists and is not a socket; not replacing it`);
    await unlink(path);
  } catch (err) {
    if (errno(err) !== 'ENOENT') throw err;
  }
}

/**
 * Listens on `<dir>/report.sock` and hands every connection to `onConnection`. The directory is
 * opened without following links and the socket bound through that descriptor: the path is then
 * short whatever the node root (sun_path holds 107 bytes) and is the directory that was checked.
 * `gid` undefined (no sandbox): the socket is the sidecar's alone.
 */
export async function listenOnChannel(dir: string, gid: number | undefined, onConnection: (socket: net.Socket) => void, maxConnections: number): Promise<Channel> {
  const path = join(dir, REPORT_SOCKET_NAME);
  const dirHandle = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
  const server = net.createServer(onConnection);
  server.maxConnections = maxConnections;
  try {
    await removeStale(path);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(`/proc/self/fd/${dirHandle.fd}/${REPORT_SOCKET_NAME}`, () => {
        server.off('error', reject);
        resolve();
      });
    });
    // Until these two calls the socket has the umask's mode (no write for others: none can connect).
    if (gid !== undefined) await chown(path, 0, gid);
    await chmod(path, gid !== undefined ? 0o660 : 0o600);
  } catch (err) {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await dirHandle.close();
    throw err;
  }
  server.on('error', () => undefined); // accept errors (EMFILE) are per connection; the listener stays
  let closing: Promise<void> | undefined;
  return {
    path,
    // Closing the listener unlinks the socket at once, through the same descriptor (still open until
    // then); connections already accepted end on the HTTP server's own timeouts.
    close: () => (closing ??= (server.close(), dirHandle.close())),
  };
}
