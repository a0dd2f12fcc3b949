import { describe, expect, it } from 'vitest';

import { logToArray } from '../chunklog';
import { TokenItem } from '../protocol';
import {
  CSV_COLUMNS,
  historyCsv,
  historyRows,
  CHART_MAX_POINTS,
  latencySeries,
  latencySummary,
  lossSeries,
  lossSummary,
  PROB_BOUNDS,
  TOKEN_CSV_COLUMNS,
  percentile,
  pickChartRuns,
  pointCount,
  probLegend,
  probLevel,
  recentLatencies,
  tintLevel,
  tokensCsv
} from '../series';
import { Action, State, initialState, reduceAll } from '../store';
import { fixtureAction } from './fixtures';

const fx = fixtureAction;

function start(run: string, kind: 'generate' | 'train', quant: string | null = null): Action {
  return {
    type: 'message',
    message: {
      v: 1,
      type: 'run.start',
      run,
      kind,
      model: {
        name: 'starter:gpt-tiny',
        params: 4_600_000,
        dtype: 'float32',
        quant,
        device: 'cpu'
      },
      config: {},
      t0: Date.UTC(2025, 0, 2, 3, 4, 5)
    }
  };
}

function toks(run: string, ms: number[], from = 0): Action {
  const items: TokenItem[] = ms.map((m, k) => ({
    i: from + k,
    id: 100 + k,
    text: `t${from + k}`,
    ms: m
  }));
  return { type: 'message', message: { v: 1, type: 'tokens', run, items } };
}

function step(run: string, s: number, loss: number): Action {
  return {
    type: 'message',
    message: {
      v: 1,
      type: 'train.step',
      run,
      step: s,
      loss,
      lr: 1e-3,
      tok_s: null,
      epoch: null,
      eta_s: null
    }
  };
}

function evalAt(run: string, s: number, val: number): Action {
  return {
    type: 'message',
    message: {
      v: 1,
      type: 'train.eval',
      run,
      step: s,
      val_loss: val,
      ppl: Math.exp(val),
      metrics: {}
    }
  };
}

function end(run: string, status: 'ok' | 'cancelled' = 'ok'): Action {
  return {
    type: 'message',
    message: {
      v: 1,
      type: 'run.end',
      run,
      status,
      metrics: {
        ttft_ms: 40,
        tokens: 4,
        tok_s: 200,
        itl_p50_ms: 5,
        itl_p95_ms: 9,
        peak_mem_mb: null
      },
      error: null
    }
  };
}

function session(): State {
  return reduceAll(initialState(), [
    start('fp32', 'generate'),
    toks('fp32', [40, 45, 50, 60]),
    end('fp32'),
    start('int8', 'generate', 'int8'),
    toks('int8', [20, 22, 24]),
    start('t1', 'train'),
    step('t1', 1, 3.0),
    step('t1', 2, 2.5),
    evalAt('t1', 2, 2.7),
    step('t1', 3, 2.2)
  ]);
}

describe('latencySeries', () => {
  it('gives inter-token latency per token index, one aligned series per run, TTFT markers', () => {
    const s = session();
    const d = latencySeries([s.runs['fp32'], s.runs['int8']]);
    expect(d.x).toEqual([0, 1, 2, 3]);
    expect(d.series.map(x => x.run)).toEqual(['fp32', 'int8']);
    expect(d.series[0].values).toEqual([null, 5, 5, 10]);
    expect(d.series[1].values).toEqual([null, 2, 2, null]);
    expect(d.series[1].label).toContain('int8');
    expect(d.series[0].label).toContain('float32');
    expect(d.series.map(x => x.colorIndex)).toEqual([0, 1]);
    expect(d.markers.map(m => [m.run, m.x, m.y])).toEqual([
      ['fp32', 0, 40],
      ['int8', 0, 20]
    ]);
    expect(pointCount(d)).toBe(5);
  });

  it('keeps only the last `window` token indices (and drops the TTFT marker then)', () => {
    const s = session();
    const d = latencySeries([s.runs['fp32']], 2);
    expect(d.x).toEqual([2, 3]);
    expect(d.series[0].values).toEqual([5, 10]);
    expect(d.markers).toEqual([]);
  });

  it('does not invent a latency across a gap and is empty without tokens', () => {
    const s = reduceAll(initialState(), [toks('g', [10, 12]), toks('g', [30], 5)]);
    const d = latencySeries([s.runs['g']]);
    expect(d.x.length).toBe(6);
    expect(d.series[0].values).toEqual([null, 2, null, null, null, null]);
    expect(latencySeries([])).toEqual({ x: [], series: [], markers: [] });
  });
});

describe('lossSeries', () => {
  it('aligns train and eval loss on the union of steps', () => {
    const s = session();
    const d = lossSeries([s.runs['t1']]);
    expect(d.x).toEqual([1, 2, 3]);
    expect(d.series.map(x => x.label)).toEqual(['train loss', 'eval loss']);
    expect(d.series[0].values).toEqual([3.0, 2.5, 2.2]);
    expect(d.series[1].values).toEqual([null, 2.7, null]);
    expect(d.series[1].dashed).toBe(true);
    expect(d.series[1].spanGaps).toBe(true);
    expect(pointCount(d)).toBe(4);
    expect(lossSeries([s.runs['t1']], 2).x).toEqual([2, 3]);
  });
});

describe('pickChartRuns', () => {
  it('defaults to the latest run with tokens and the latest with steps', () => {
    const s = session();
    const p = pickChartRuns(s, new Set());
    expect(p.latency.map(r => r.id)).toEqual(['int8']);
    expect(p.loss.map(r => r.id)).toEqual(['t1']);
  });

  it('overlays the selected runs in start order, by what they have', () => {
    const s = session();
    const p = pickChartRuns(s, new Set(['int8', 'fp32', 't1', 'gone']));
    expect(p.latency.map(r => r.id)).toEqual(['fp32', 'int8']);
    expect(p.loss.map(r => r.id)).toEqual(['t1']);
    // A chart none of whose runs is selected shows the latest run that has its data.
    const only = pickChartRuns(s, new Set(['fp32']));
    expect(only.latency.map(r => r.id)).toEqual(['fp32']);
    expect(only.loss.map(r => r.id)).toEqual(['t1']);
  });
});

describe('history rows and CSV', () => {
  it('summarises each run, newest first', () => {
    const rows = historyRows(session());
    expect(rows.map(r => r.run)).toEqual(['t1', 'int8', 'fp32']);
    const fp32 = rows[2];
    expect(fp32).toMatchObject({
      kind: 'generate',
      status: 'ok',
      ttft_ms: 40,
      tok_s: 200,
      itl_p50_ms: 5,
      itl_p95_ms: 9,
      tokens: 4,
      final_loss: null
    });
    expect(rows[1].ttft_ms).toBe(20); // live: first token's ms
    expect(rows[1].tok_s).toBeCloseTo(500); // live: 2 gaps over 4 ms
    expect(rows[0]).toMatchObject({
      kind: 'train',
      final_loss: 2.2,
      final_val_loss: 2.7,
      ttft_ms: null
    });
  });

  it('exports RFC 4180 CSV with ISO start times and quoted fields', () => {
    const csv = historyCsv(historyRows(session()));
    const lines = csv.split('\r\n');
    expect(lines[0]).toBe(CSV_COLUMNS.join(','));
    expect(lines.length).toBe(5); // header, 3 rows, trailing empty
    expect(lines[4]).toBe('');
    expect(lines[3]).toBe(
      'fp32,generate,starter:gpt-tiny · 4.6M · float32 · cpu,ok,40,200,5,9,4,,,2025-01-02T03:04:05.000Z'
    );
    const odd = historyCsv([
      {
        run: 'a,"b"',
        kind: 'generate',
        model: 'x\ny',
        status: 'ok',
        ttft_ms: null,
        tok_s: null,
        itl_p50_ms: null,
        itl_p95_ms: null,
        tokens: 0,
        final_loss: null,
        final_val_loss: null,
        started: null
      }
    ]);
    expect(odd.split('\r\n')[1]).toBe('"a,""b""",generate,"x\ny",ok,,,,,0,,,');
  });
});

describe('token probabilities and the tokens CSV', () => {
  it('levels a token by p = exp(logprob): 0 from 90 %, 4 below 5 %', () => {
    expect(PROB_BOUNDS).toEqual([0.9, 0.5, 0.2, 0.05]);
    expect(probLevel(0)).toBe(0); // p = 1
    expect(probLevel(Math.log(0.9))).toBe(0);
    expect(probLevel(Math.log(0.89))).toBe(1);
    expect(probLevel(Math.log(0.5))).toBe(1);
    expect(probLevel(Math.log(0.3))).toBe(2);
    expect(probLevel(Math.log(0.06))).toBe(3);
    expect(probLevel(Math.log(0.049))).toBe(4);
    expect(probLevel(-1e30)).toBe(4); // the kernel's floor for an impossible token
    expect(probLegend()).toEqual(['≥ 90%', '50–90%', '20–50%', '5–20%', '< 5%']);
  });

  it('writes every token with its logprob, prob and top alternatives as JSON', () => {
    const s = reduceAll(initialState(), [fx('tokens_logprobs.json')]);
    const lines = tokensCsv(logToArray(s.runs['gen-7f3a'].tokens)).split('\r\n');
    expect(lines[0]).toBe('i,id,text,ms,logprob,prob,top');
    expect(TOKEN_CSV_COLUMNS.join(',')).toBe(lines[0]);
    expect(lines[1]).toBe(
      `0,464,Once,12.5,-0.105,${Math.exp(-0.105)},` +
        '"[{""id"":464,""text"":""Once"",""logprob"":-0.105},{""id"":40,""text"":""I"",""logprob"":-2.9}]"'
    );
    expect(lines[3]).toBe(`2,257, a,21,-0.01,${Math.exp(-0.01)},[]`); // logprobs=0: no alternatives
    expect(lines[4]).toBe('3,,✓,22,,,'); // the held-back tail has neither
    expect(lines.length).toBe(6); // header, 4 tokens, '' after the final CRLF
  });

  it('leaves the logprob columns empty when logprobs were off, and quotes odd pieces', () => {
    const odd: TokenItem[] = [
      { i: 0, id: 5, text: 'a,"b"\n', ms: 1.5 },
      {
        i: 1,
        id: 6,
        text: ';|',
        ms: 2,
        logprob: -0.5,
        top: [{ id: 6, text: 'x"|;\n', logprob: -0.5 }]
      }
    ];
    const lines = tokensCsv(odd).split('\r\n');
    expect(lines[1]).toBe('0,5,"a,""b""\n",1.5,,,');
    expect(lines[2]).toBe(
      `1,6,;|,2,-0.5,${Math.exp(-0.5)},"[{""id"":6,""text"":""x\\""|;\\n"",""logprob"":-0.5}]"`
    );
    expect(tokensCsv([])).toBe('i,id,text,ms,logprob,prob,top\r\n');
    // A field a later v1 addition puts on an alternative is not written: the columns stay fixed.
    const later = { id: 6, text: 'x', logprob: -0.5, rank: 1 };
    const one = tokensCsv([{ i: 0, id: 6, text: 'x', ms: 1, logprob: -0.5, top: [later] }]);
    expect(one.split('\r\n')[1]).toMatch(/,"\[\{""id"":6,""text"":""x"",""logprob"":-0\.5\}\]"$/);
  });
});

describe('percentile / tint', () => {
  it('computes nearest-rank percentiles', () => {
    expect(percentile([], 0.5)).toBeNull();
    expect(percentile([5, 1, 3], 0.5)).toBe(3);
    expect(percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.95)).toBe(10);
    expect(percentile([1, 2, 3, 4], 0.5)).toBe(2);
  });

  it('tints by latency relative to the typical one', () => {
    expect(tintLevel(5, null)).toBe(0);
    expect(tintLevel(5, 5)).toBe(0);
    expect(tintLevel(8, 5)).toBe(1);
    expect(tintLevel(12, 5)).toBe(2);
    expect(tintLevel(20, 5)).toBe(3);
    expect(tintLevel(100, 5)).toBe(4);
  });

  it('takes the recent inter-token latencies of a run', () => {
    const s = session();
    expect(recentLatencies(s.runs['fp32'])).toEqual([5, 5, 10]);
    expect(recentLatencies(s.runs['fp32'], 2)).toEqual([5, 10]);
  });
});

describe('fixtures through the chart logic', () => {
  it('charts the shared protocol fixtures', () => {
    const s = reduceAll(initialState(), [
      fx('run_start_generate.json'),
      fx('tokens.json'),
      fx('run_start_train.json'),
      fx('train_step.json'),
      fx('train_eval.json')
    ]);
    const p = pickChartRuns(s, new Set());
    const lat = latencySeries(p.latency);
    expect(lat.series.length).toBe(1);
    expect(lat.series[0].values[1]).toBeCloseTo(4.75);
    expect(lat.markers[0].y).toBe(12.5);
    const loss = lossSeries(p.loss);
    expect(loss.series.length).toBeGreaterThanOrEqual(1);
  });
});

describe('loss colours', () => {
  it("gives a run's eval loss the colour next to its train loss", () => {
    const s = session();
    expect(lossSeries([s.runs['t1']]).series.map(x => x.colorIndex)).toEqual([0, 1]);
  });
});

describe('downsampled charts', () => {
  function longRun(): State {
    const items: TokenItem[] = [];
    let ms = 40;
    for (let i = 0; i < 5000; i++) {
      ms += i === 2500 ? 300 : 5;
      items.push({ i, id: i, text: 'x', ms });
    }
    const steps: Action[] = [];
    for (let step = 1; step <= 2000; step++) {
      steps.push({
        type: 'message',
        message: {
          v: 1,
          type: 'train.step',
          run: 't',
          step,
          loss: 5 / Math.sqrt(step),
          lr: 1e-3,
          tok_s: null,
          epoch: null,
          eta_s: null
        }
      });
      if (step % 100 === 0) {
        steps.push({
          type: 'message',
          message: {
            v: 1,
            type: 'train.eval',
            run: 't',
            step,
            val_loss: 6 / Math.sqrt(step),
            ppl: null,
            metrics: {}
          }
        });
      }
    }
    return reduceAll(initialState(), [
      { type: 'limits', maxRuns: 10, maxTokens: 1e9 },
      start('g', 'generate'),
      { type: 'message', message: { v: 1, type: 'tokens', run: 'g', items } },
      start('t', 'train'),
      ...steps
    ]);
  }

  it('latency: at most CHART_MAX_POINTS, the stall and the last token exact', () => {
    const s = longRun();
    const d = latencySeries([s.runs['g']]);
    expect(d.x.length).toBeLessThanOrEqual(CHART_MAX_POINTS);
    const v = d.series[0].values.filter((x): x is number => x !== null);
    expect(Math.max(...v)).toBe(300);
    expect(d.x[d.x.length - 1]).toBe(4999);
    expect(d.series[0].values[d.x.length - 1]).toBe(5);
  });

  it('loss: LTTB per run, the last step and every eval exact', () => {
    const s = longRun();
    const d = lossSeries([s.runs['t']]);
    expect(d.x.length).toBeLessThanOrEqual(CHART_MAX_POINTS + 20);
    const [train, ev] = d.series;
    expect(d.x[d.x.length - 1]).toBe(2000);
    expect(train.values[train.values.length - 1]).toBe(5 / Math.sqrt(2000));
    expect(ev.values.filter(x => x !== null).length).toBe(20);
    expect(pointCount(d)).toBeLessThanOrEqual(CHART_MAX_POINTS + 20);
  });

  it('summarises the charts in words', () => {
    const s = longRun();
    expect(lossSummary([s.runs['t']])).toBe(
      'Loss chart: train loss 0.112 at step 2000, min 0.112 at step 2000, eval loss 0.134 at step 2000.'
    );
    expect(latencySummary([s.runs['g']])).toMatch(
      /^Inter-token latency chart: 5000 tokens, TTFT 45\.0 ms, inter-token latency p50 5\.0 ms, p95 5\.0 ms, max 300 ms\.$/
    );
    expect(lossSummary([])).toMatch(/no training steps/);
  });
});
