/**
 * Downsampling of chart series (pure; unit-tested): a chart never gets more points than it has
 * pixels to show them, whatever the length of the run.
 *
 * - `lttb`: Largest-Triangle-Three-Buckets (Steinarsson 2013) for smooth curves (train loss): keeps
 *   the first and the last point exactly and the visual shape of the rest.
 * - `minMaxGrid`: min/max per bucket on a grid shared by every run of an overlay (inter-token
 *   latency): every spike survives with its exact value, gaps stay gaps, the last point is exact.
 */

/**
 * Indices (ascending) of at most `n` points of the series (xs[k], ys[k]) chosen by LTTB. All of
 * them when there are no more than `n`; always the first and the last.
 */
export function lttb(xs: ArrayLike<number>, ys: ArrayLike<number>, n: number): number[] {
  const len = xs.length;
  if (len <= n || len <= 2) {
    return Array.from({ length: len }, (_, k) => k);
  }
  if (n < 3) {
    return [0, len - 1];
  }
  const out: number[] = [0];
  const every = (len - 2) / (n - 2);
  let a = 0;
  for (let b = 0; b < n - 2; b++) {
    // The average point of the next bucket (the last point for the last bucket).
    const nextStart = Math.floor((b + 1) * every) + 1;
    const nextEnd = Math.min(Math.floor((b + 2) * every) + 1, len);
    let avgX = 0;
    let avgY = 0;
    if (nextStart < nextEnd && b < n - 3) {
      for (let k = nextStart; k < nextEnd; k++) {
        avgX += xs[k];
        avgY += ys[k];
      }
      avgX /= nextEnd - nextStart;
      avgY /= nextEnd - nextStart;
    } else {
      avgX = xs[len - 1];
      avgY = ys[len - 1];
    }
    // The point of this bucket that makes the largest triangle with the last kept one and that average.
    const start = Math.floor(b * every) + 1;
    const end = Math.min(Math.floor((b + 1) * every) + 1, len - 1);
    const ax = xs[a];
    const ay = ys[a];
    let best = start;
    let bestArea = -1;
    for (let k = start; k < end; k++) {
      const area = Math.abs((ax - avgX) * (ys[k] - ay) - (ax - xs[k]) * (avgY - ay));
      if (area > bestArea) {
        bestArea = area;
        best = k;
      }
    }
    out.push(best);
    a = best;
  }
  out.push(len - 1);
  return out;
}

/** A grid of buckets over positions 0..len-1, shared by every series of one chart. */
export interface Grid {
  /** Position (0-based) of each output point; ascending; the last is `len - 1`. */
  at: number[];
  /** Positions per bucket (1: no downsampling, `at` is every position). */
  width: number;
}

/**
 * The grid for `len` positions drawn with at most `maxPoints` points: every position when they fit,
 * else buckets of `width` positions, each drawn as two points (its min and its max), plus the last
 * position on its own.
 */
export function grid(len: number, maxPoints: number): Grid {
  if (len <= maxPoints) {
    return { at: Array.from({ length: len }, (_, k) => k), width: 1 };
  }
  const buckets = Math.max(1, Math.floor((maxPoints - 1) / 2));
  const width = Math.ceil((len - 1) / buckets);
  const at: number[] = [];
  for (let start = 0; start < len - 1; start += width) {
    at.push(start);
    const mid = start + Math.floor(width / 2);
    if (mid > start && mid < len - 1) {
      at.push(mid);
    }
  }
  at.push(len - 1);
  return { at, width };
}

/**
 * `values` (one per position, null where there is none) on `g`: per bucket its minimum and its
 * maximum, in the order they occur (so the line goes to a spike and back), at the bucket's two
 * points; null where the bucket has no value; the last position exact.
 */
export function minMaxGrid(values: readonly (number | null)[], g: Grid): (number | null)[] {
  if (g.width === 1) {
    return g.at.map(k => values[k] ?? null);
  }
  const out: (number | null)[] = [];
  const last = values.length - 1;
  for (let j = 0; j < g.at.length - 1;) {
    const start = g.at[j];
    const end = Math.min(start + g.width, last);
    const pair = j + 1 < g.at.length - 1 && g.at[j + 1] < end;
    let lo: number | null = null;
    let hi: number | null = null;
    let loAt = -1;
    let hiAt = -1;
    for (let k = start; k < end; k++) {
      const v = values[k];
      if (v === null || v === undefined) {
        continue;
      }
      if (lo === null || v < lo) {
        lo = v;
        loAt = k;
      }
      if (hi === null || v > hi) {
        hi = v;
        hiAt = k;
      }
    }
    if (pair) {
      const [first, second] = loAt <= hiAt ? [lo, hi] : [hi, lo];
      out.push(first, second);
      j += 2;
    } else {
      out.push(hi);
      j += 1;
    }
  }
  out.push(values[last] ?? null);
  return out;
}
