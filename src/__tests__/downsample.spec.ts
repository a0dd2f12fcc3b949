import { describe, expect, it } from 'vitest';

import { grid, lttb, minMaxGrid } from '../downsample';

describe('lttb', () => {
  it('keeps every point when they fit, else at most n with the first and last', () => {
    const xs = Array.from({ length: 10 }, (_, k) => k);
    expect(lttb(xs, xs, 10)).toEqual(xs);
    const n = 2000;
    const big = Array.from({ length: n }, (_, k) => k);
    const ys = big.map(k => Math.sin(k / 50));
    const kept = lttb(big, ys, 100);
    expect(kept.length).toBe(100);
    expect(kept[0]).toBe(0);
    expect(kept[kept.length - 1]).toBe(n - 1);
    expect(kept.every((k, j) => j === 0 || k > kept[j - 1])).toBe(true);
  });

  it('keeps a lone spike', () => {
    const n = 1000;
    const xs = Array.from({ length: n }, (_, k) => k);
    const ys = xs.map(k => (k === 617 ? 50 : 2));
    expect(lttb(xs, ys, 50)).toContain(617);
  });
});

describe('minMaxGrid', () => {
  it('is the identity when the positions fit', () => {
    const g = grid(5, 10);
    expect(g.width).toBe(1);
    expect(minMaxGrid([1, null, 3, 4, 5], g)).toEqual([1, null, 3, 4, 5]);
  });

  it('draws at most maxPoints, every spike exact, gaps as gaps, the last point exact', () => {
    const n = 5000;
    const values: (number | null)[] = Array.from({ length: n }, (_, k) => 4 + (k % 7) * 0.01);
    values[1234] = 90; // a stall
    values[3000] = 0.5; // a dip
    for (let k = 4000; k < 4100; k++) {
      values[k] = null; // tokens lost
    }
    values[n - 1] = 7.77;
    const g = grid(n, 400);
    const out = minMaxGrid(values, g);
    expect(out.length).toBe(g.at.length);
    expect(out.length).toBeLessThanOrEqual(400);
    expect(Math.max(...(out.filter(v => v !== null) as number[]))).toBe(90);
    expect(Math.min(...(out.filter(v => v !== null) as number[]))).toBe(0.5);
    expect(g.at[g.at.length - 1]).toBe(n - 1);
    expect(out[out.length - 1]).toBe(7.77);
    // The bucket wholly inside the gap has no value.
    const inGap = g.at.findIndex(k => k >= 4010 && k + g.width <= 4100);
    expect(inGap).toBeGreaterThan(0);
    expect(out[inGap]).toBeNull();
  });
});
