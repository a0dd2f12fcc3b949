// @vitest-environment jsdom
import { Widget } from '@lumino/widgets';
import { describe, expect, it } from 'vitest';

import { KernelChannel } from '../channel';
import { AigcLabPanel } from '../panel';
import {
  evalMetricNames,
  evalMetricSeries,
  evalSummary,
  higherIsBetter,
  pickChartRuns,
  pointCount
} from '../series';
import { Action, State, initialState, reduceAll } from '../store';
import { fakeKernel, frame } from './fakekernel';
import { fixtureAction } from './fixtures';

const fx = fixtureAction;

function start(run: string, t0: number): Action {
  return {
    type: 'message',
    message: {
      v: 1,
      type: 'run.start',
      run,
      kind: 'train',
      model: { name: 'm', params: 1, dtype: 'float32', quant: null, device: 'cpu' },
      config: { max_steps: 1000 },
      t0
    }
  };
}

function step(run: string, n: number): Action {
  return {
    type: 'message',
    message: {
      v: 1,
      type: 'train.step',
      run,
      step: n,
      loss: 3 / n,
      lr: 1e-3,
      tok_s: null,
      epoch: null,
      eta_s: null
    }
  };
}

function evalAt(run: string, n: number, metrics: { [k: string]: number }): Action {
  return {
    type: 'message',
    message: { v: 1, type: 'train.eval', run, step: n, val_loss: 2, ppl: null, metrics }
  };
}

/** A run with `n` evals of exact match (0..1), chrF and BLEU (0..100), one every 10 steps. */
function metricRun(run: string, n: number, t0 = 1): Action[] {
  const actions: Action[] = [start(run, t0)];
  for (let k = 1; k <= n; k++) {
    actions.push(step(run, 10 * k));
    actions.push(
      evalAt(run, 10 * k, {
        exact_match: Math.min(1, k / n),
        chrf: 20 + k,
        bleu: k === 2 ? 50 : 5 + k / 10
      })
    );
  }
  return actions;
}

describe('eval metrics chart data', () => {
  it('draws one series per metric per run, 0-1 metrics and wider ones on two axes', () => {
    const s = reduceAll(initialState(), metricRun('t1', 3));
    const run = s.runs['t1'];
    expect(evalMetricNames(run)).toEqual(['exact_match', 'chrf', 'bleu']);
    const d = evalMetricSeries([run]);
    expect(d.x).toEqual([10, 20, 30]);
    expect(d.series.map(x => [x.label, x.scale, x.points, x.spanGaps])).toEqual([
      ['exact_match', 'y', true, true],
      ['chrf', 'y2', true, true],
      ['bleu', 'y2', true, true]
    ]);
    expect(d.series[1].values).toEqual([21, 22, 23]);
    expect(d.yLabel).toBe('exact_match');
    expect(d.y2Label).toBe('chrf, bleu');
    expect(d.yRange).toEqual([0, 1]);
    expect(new Set(d.series.map(x => x.colorIndex)).size).toBe(3);
  });

  it('uses one axis when every metric has the same range', () => {
    const s = reduceAll(initialState(), [
      start('t', 1),
      evalAt('t', 5, { exact_match: 0.25, accuracy: 0.5 }),
      evalAt('t', 10, { exact_match: 0.75, accuracy: 1 })
    ]);
    const d = evalMetricSeries([s.runs['t']]);
    expect(d.series.map(x => x.scale)).toEqual(['y', 'y']);
    expect(d.yLabel).toBeUndefined();
    expect(d.y2Label).toBeUndefined();
    expect(d.yRange).toEqual([0, 1]);
    const wide = reduceAll(initialState(), [start('w', 1), evalAt('w', 5, { chrf: 40, bleu: 9 })]);
    const dw = evalMetricSeries([wide.runs['w']]);
    expect(dw.series.map(x => x.scale)).toEqual(['y', 'y']);
    expect(dw.yRange).toBeUndefined(); // fitted to the data
  });

  it('keeps every eval point, however many (never downsampled)', () => {
    const n = 1500; // more than CHART_MAX_POINTS
    const s = reduceAll(initialState(), metricRun('long', n));
    const d = evalMetricSeries([s.runs['long']]);
    expect(d.x.length).toBe(n);
    expect(pointCount(d)).toBe(3 * n);
  });

  it('overlays runs (labels name the run) on the union of their eval steps, windowed by steps', () => {
    const s = reduceAll(initialState(), [
      ...metricRun('a', 3, 1),
      start('b', 2),
      evalAt('b', 15, { exact_match: 0.1 }),
      evalAt('b', 30, { exact_match: 0.2 })
    ]);
    const d = evalMetricSeries([s.runs['a'], s.runs['b']]);
    expect(d.x).toEqual([10, 15, 20, 30]);
    expect(d.series.map(x => x.label)).toEqual([
      'exact_match · a',
      'chrf · a',
      'bleu · a',
      'exact_match · b'
    ]);
    expect(d.series[3].values).toEqual([null, 0.1, null, 0.2]);
    // A window of the last 2 steps of run a (steps 20, 30): its evals from step 20 on.
    const w = evalMetricSeries([s.runs['a']], 2);
    expect(w.x).toEqual([20, 30]);
  });

  it('has nothing to draw for runs whose evals carry no metrics', () => {
    const s = reduceAll(initialState(), [fx('run_start_train.json'), evalAt('train-01', 5, {})]);
    expect(evalMetricSeries([s.runs['train-01']]).series).toEqual([]);
    expect(pickChartRuns(s, new Set()).evals).toEqual([]);
    expect(evalSummary([])).toBe('Eval metrics chart: no generative eval metrics yet.');
  });

  it('picks the selected runs that have metrics, else the latest that has', () => {
    const s: State = reduceAll(initialState(), [
      ...metricRun('old', 2, 1),
      ...metricRun('new', 2, 2),
      start('plain', 3),
      step('plain', 1)
    ]);
    expect(pickChartRuns(s, new Set()).evals.map(r => r.id)).toEqual(['new']);
    expect(pickChartRuns(s, new Set(['old', 'plain'])).evals.map(r => r.id)).toEqual(['old']);
  });

  it('summarises the latest value of each metric and its best for screen readers', () => {
    const s = reduceAll(initialState(), [
      ...metricRun('t1', 3),
      evalAt('t1', 40, { exact_match: 0.5, chrf: 30, bleu: 6, wer: 0.2 }),
      evalAt('t1', 50, { wer: 0.4 })
    ]);
    const text = evalSummary([s.runs['t1']]);
    expect(text).toBe(
      'Eval metrics chart: ' +
        'exact_match 0.500 at step 40 (best 1.00, highest, at step 30), ' +
        'chrf 30.0 at step 40 (best 30.0, highest, at step 40), ' +
        'bleu 6.00 at step 40 (best 50.0, highest, at step 20), ' +
        'wer 0.400 at step 50 (best 0.200, lowest, at step 40).'
    );
    const two = reduceAll(s, metricRun('t2', 1, 5));
    expect(evalSummary([two.runs['t1'], two.runs['t2']])).toMatch(
      /^Eval metrics chart: t1: exact_match .*\. t2: exact_match 1\.00 at step 10 .*\.$/
    );
  });

  it('knows which metrics are better lower', () => {
    for (const name of ['exact_match', 'chrf', 'bleu', 'accuracy', 'rouge_l', 'filter_score']) {
      expect(higherIsBetter(name), name).toBe(true);
    }
    for (const name of ['wer', 'cer', 'ter', 'val_loss', 'ppl', 'char_error', 'test_wer']) {
      expect(higherIsBetter(name), name).toBe(false);
    }
  });
});

describe('the eval metrics chart in the panel', () => {
  const settle = async () => {
    // the charts redraw at most every CHART_INTERVAL_MS: wait for the timer, then two frames
    await new Promise(r => setTimeout(r, 250));
    await frame();
    await frame();
  };

  it('appears only once a run has eval metrics, with one series per metric and a summary', async () => {
    const panel = new AigcLabPanel();
    Widget.attach(panel, document.body);
    panel.scheduler.budgetMs = Infinity;
    panel.scheduler.adaptive = false;
    const channel = new KernelChannel(fakeKernel('k-eval'));
    panel.follow(channel);
    const chart = panel.node.querySelector('.aigc-eval-chart') as HTMLElement;
    expect(chart.getAttribute('role')).toBe('figure');
    expect(chart.getAttribute('aria-label')).toBe('Eval metrics');
    channel.store.dispatch(fx('run_start_train.json'));
    channel.store.dispatch(fx('train_step.json'));
    channel.store.dispatch(evalAt('train-01', 10, {}));
    await settle();
    expect(chart.hidden).toBe(true); // eval loss only: nothing for this chart
    expect(panel.node.querySelector('.aigc-loss-chart')?.getAttribute('data-series-count')).toBe(
      '2'
    );
    for (const a of metricRun('gen-eval', 2, 1795460400001).slice(0)) {
      channel.store.dispatch(a);
    }
    await settle();
    expect(chart.hidden).toBe(false);
    expect(chart.getAttribute('data-series-count')).toBe('3');
    expect(chart.getAttribute('data-point-count')).toBe('6');
    expect(chart.getAttribute('data-runs')).toBe('gen-eval');
    const summary = document.getElementById(chart.getAttribute('aria-describedby') ?? '');
    expect(summary?.textContent).toMatch(
      /^Eval metrics chart: exact_match 1\.00 at step 20 \(best 1\.00, highest, at step 20\), chrf 22\.0/
    );
    expect(chart.querySelector('.aigc-chart-plot')?.getAttribute('aria-hidden')).toBe('true');
    panel.dispose();
  });
});
