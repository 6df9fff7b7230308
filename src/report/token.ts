/**
 * Per-agent report tokens, derived rather than stored: `<uid>.<HMAC-SHA256(secret, uid)>`. The
 * sidecar keeps one secret per node (persisted, so tokens held by running sessions survive a
 * sidecar restart) and can verify any token without a table; a token names its agent, so agent A's
 * token can never report for agent B.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

const SEPARATOR = '.';

/** A fresh node secret (32 random bytes). */
export function generateReportSecret(): Buffer {
  return randomBytes(32);
}

function mac(secret: Buffer, uid: string): Buffer {
  return createHmac('sha256', secret).update(uid).digest();
}

/** The token to put in AGENT_REPORT_TOKEN for the agent with this UID. */
export function reportTokenFor(secret: Buffer, uid: string): string {
  if (!uid || uid.includes(SEPARATOR)) throw new Error(`invalid agent uid for a report token: '${uid}'`);
  return `${uid}${SEPARATOR}${mac(secret, uid).toString('base64url')}`;
}

/**
 * The agent UID a token was issued for, or undefined when it was not issued with this secret.
 * Compares MACs with timingSafeEqual (a wrong length says nothing secret: every MAC is 32 bytes).
 */
export function verifyReportToken(secret: Buffer, token: string): string | undefined {
  const cut = token.lastIndexOf(SEPARATOR);
  if (cut <= 0) return undefined;
  const uid = token.slice(0, cut);
  const presented = Buffer.from(token.slice(cut + 1), 'base64url');
  const expected = mac(secret, uid);
  if (presented.length !== expected.length) return undefined;
  return timingSafeEqual(presented, expected) ? uid : undefined;
}
