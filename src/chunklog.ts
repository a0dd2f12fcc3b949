/**
 * An append-only log stored in fixed-size chunks, with a cap: the store's token and step storage.
 *
 * Persistent (never mutated): appending copies only the last, partial chunk and the array of chunk
 * references, so a batch costs O(batch + CHUNK + chunks) instead of O(everything so far), and two
 * states of a run share every full chunk. Every chunk but the last is full (`LOG_CHUNK` items), so
 * item `k` is `chunks[k / LOG_CHUNK][k % LOG_CHUNK]`.
 *
 * The cap drops whole chunks from the front while more than `cap` items are kept; `dropped`
 * counts them (the panel says how many were elided: the kernel still holds everything). So a log
 * keeps between `cap - LOG_CHUNK` and `cap` items once it is over the cap.
 */

/** Items per chunk. */
export const LOG_CHUNK = 256;

export interface ChunkLog<T> {
  /** Full chunks, oldest first; the last one may be partial. */
  readonly chunks: readonly (readonly T[])[];
  /** Items kept. */
  readonly length: number;
  /** Items dropped from the front by the cap. */
  readonly dropped: number;
}

const EMPTY: ChunkLog<never> = Object.freeze({ chunks: Object.freeze([]), length: 0, dropped: 0 });

export function emptyLog<T>(): ChunkLog<T> {
  return EMPTY;
}

/** Items ever appended (kept + dropped). */
export function logTotal<T>(log: ChunkLog<T>): number {
  return log.dropped + log.length;
}

/** Item `k` of the kept items (0 <= k < length). */
export function logAt<T>(log: ChunkLog<T>, k: number): T {
  return log.chunks[Math.floor(k / LOG_CHUNK)][k % LOG_CHUNK];
}

export function logFirst<T>(log: ChunkLog<T>): T | undefined {
  return log.length > 0 ? log.chunks[0][0] : undefined;
}

export function logLast<T>(log: ChunkLog<T>): T | undefined {
  const c = log.chunks[log.chunks.length - 1];
  return c === undefined ? undefined : c[c.length - 1];
}

/** Drop whole chunks from the front while more than `cap` items are kept. */
export function capLog<T>(log: ChunkLog<T>, cap: number): ChunkLog<T> {
  if (log.length <= cap) {
    return log;
  }
  let drop = 0;
  let removed = 0;
  while (drop < log.chunks.length - 1 && log.length - removed > cap) {
    removed += log.chunks[drop].length;
    drop++;
  }
  if (drop === 0) {
    return log;
  }
  return {
    chunks: log.chunks.slice(drop),
    length: log.length - removed,
    dropped: log.dropped + removed
  };
}

/** `log` with `items` appended, then capped at `cap` items (Infinity: no cap). */
export function appendLog<T>(log: ChunkLog<T>, items: readonly T[], cap = Infinity): ChunkLog<T> {
  if (items.length === 0) {
    return log;
  }
  const chunks = log.chunks.slice();
  let k = 0;
  const last = chunks[chunks.length - 1];
  if (last !== undefined && last.length < LOG_CHUNK) {
    const room = LOG_CHUNK - last.length;
    chunks[chunks.length - 1] = last.concat(items.slice(0, room));
    k = room;
  }
  for (; k < items.length; k += LOG_CHUNK) {
    chunks.push(items.slice(k, k + LOG_CHUNK));
  }
  return capLog(
    { chunks, length: log.length + items.length, dropped: log.dropped },
    Math.max(1, cap)
  );
}

/** The kept items from `from` (inclusive) to `to` (exclusive) as an array. */
export function logSlice<T>(log: ChunkLog<T>, from = 0, to = log.length): T[] {
  const out: T[] = [];
  const lo = Math.max(0, from);
  const hi = Math.min(log.length, to);
  for (let k = lo; k < hi;) {
    const c = log.chunks[Math.floor(k / LOG_CHUNK)];
    const start = k % LOG_CHUNK;
    const end = Math.min(c.length, start + (hi - k));
    for (let j = start; j < end; j++) {
      out.push(c[j]);
    }
    k += end - start;
  }
  return out;
}

/** Every kept item, in order. */
export function logToArray<T>(log: ChunkLog<T>): T[] {
  return logSlice(log);
}

/** Call `fn(item, k)` for every kept item in order, without building an array. */
export function logForEach<T>(log: ChunkLog<T>, fn: (item: T, k: number) => void): void {
  let k = 0;
  for (const c of log.chunks) {
    for (const item of c) {
      fn(item, k++);
    }
  }
}
