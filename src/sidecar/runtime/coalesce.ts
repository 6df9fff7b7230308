/**
 * Shares one run of an expensive read among concurrent callers, as a singleflight does, without
 * serving stale data: every caller gets a run that started after it called. With ten cleanups at
 * once each scanning all of /proc, this turns ten passes into two or three.
 */
export function coalesce<T>(run: () => Promise<T>): () => Promise<T> {
  let current: Promise<T> | undefined;
  let next: Promise<T> | undefined;
  const start = (): Promise<T> => {
    const p = run().finally(() => {
      if (current === p) current = undefined;
    });
    current = p;
    return p;
  };
  return () => {
    if (!current) return start();
    // A run already under way may have read what changed before this call: wait for the next one.
    next ??= current
      .catch(() => undefined)
      .then(() => {
        next = undefined;
        return start();
      });
    return next;
  };
}
