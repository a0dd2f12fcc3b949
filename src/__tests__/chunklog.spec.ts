import { describe, expect, it } from 'vitest';

import {
  LOG_CHUNK,
  appendLog,
  capLog,
  emptyLog,
  logAt,
  logFirst,
  logLast,
  logSlice,
  logToArray,
  logTotal
} from '../chunklog';

const range = (from: number, n: number): number[] => Array.from({ length: n }, (_, k) => from + k);

describe('ChunkLog', () => {
  it('appends across chunk boundaries, every chunk but the last full', () => {
    let log = emptyLog<number>();
    for (const n of [3, LOG_CHUNK, 1, 2 * LOG_CHUNK + 7]) {
      log = appendLog(log, range(log.length, n));
    }
    const total = 3 + LOG_CHUNK + 1 + 2 * LOG_CHUNK + 7;
    expect(log.length).toBe(total);
    expect(logToArray(log)).toEqual(range(0, total));
    expect(log.chunks.slice(0, -1).every(c => c.length === LOG_CHUNK)).toBe(true);
    expect(log.chunks.length).toBe(Math.ceil(total / LOG_CHUNK));
    for (const k of [0, LOG_CHUNK - 1, LOG_CHUNK, total - 1]) {
      expect(logAt(log, k)).toBe(k);
    }
    expect(logSlice(log, LOG_CHUNK - 2, LOG_CHUNK + 3)).toEqual(range(LOG_CHUNK - 2, 5));
    expect(logFirst(log)).toBe(0);
    expect(logLast(log)).toBe(total - 1);
  });

  it('never mutates: a new state shares the full chunks of the old one', () => {
    const a = appendLog(emptyLog<number>(), range(0, LOG_CHUNK + 10));
    const before = logToArray(a);
    const b = appendLog(a, [1000]);
    expect(logToArray(a)).toEqual(before);
    expect(b.chunks[0]).toBe(a.chunks[0]);
    expect(b.chunks[1]).not.toBe(a.chunks[1]);
    expect(appendLog(a, [])).toBe(a);
  });

  it('caps by dropping whole chunks from the front, counting them', () => {
    const cap = 4 * LOG_CHUNK;
    let log = emptyLog<number>();
    for (let i = 0; i < 10 * LOG_CHUNK + 17; i += 50) {
      log = appendLog(log, range(i, 50), cap);
      expect(log.length).toBeLessThanOrEqual(cap);
      expect(logTotal(log)).toBe(i + 50);
    }
    expect(log.length).toBeGreaterThan(cap - LOG_CHUNK);
    // What is kept is the newest, in order, right after what was dropped.
    expect(logFirst(log)).toBe(log.dropped);
    expect(logToArray(log)).toEqual(range(log.dropped, log.length));
    expect(log.dropped % LOG_CHUNK).toBe(0);
    // Lowering the cap later drops more; a cap above the length changes nothing.
    const lower = capLog(log, LOG_CHUNK);
    expect(lower.length).toBeLessThanOrEqual(LOG_CHUNK);
    expect(logTotal(lower)).toBe(logTotal(log));
    expect(capLog(log, 1e9)).toBe(log);
  });
});
