/** The logger the dev entrypoints use when run on their own: pino JSON on stderr. */
import { pino, type Logger } from 'pino';

export function stderrLogger(name: string): Logger {
  return pino({ name, level: process.env.LOG_LEVEL ?? 'info' }, pino.destination(2));
}
