/**
 * Pure data logic of the panel's charts, history table and CSV export (no DOM; unit-tested).
 *
 * - `pickChartRuns`: which runs the charts overlay (the history table's selection, else the latest).
 * - `latencySeries`: inter-token latency per token index, one aligned series per run, + TTFT.
 * - `lossSeries`: train loss and eval loss per step, one pair of series per training run.
 * - `evalMetricSeries`: generative eval metrics (`train.eval.metrics`: exact match, chrF, BLEU...)
 *   per step, one series per metric per run; 0–1 metrics and wider ones on two y axes.
 * - `historyRows` / `historyCsv`: the run history table and its CSV export.
 * - `tintLevel`, `percentile`: the token stream's latency tint and the live p50/p95.
 * - `probLevel`, `tokensCsv`: the token inspector's probability colours and a run's tokens CSV.
 * - `latencySummary`, `lossSummary`, `evalSummary`: the charts' text for screen readers.
 *
 * Charts are downsampled (`downsample.ts`) to at most `CHART_MAX_POINTS` points per chart, so a
 * long run draws as fast as a short one: latency by min/max buckets (spikes and the last point
 * exact), train loss by LTTB per run (first and last step exact), eval points (eval loss and eval
 * metrics) all exact.
 *
 * Words in labels and summaries go through the panel's translator (`trans`, default English).
 */

import { TranslationBundle } from '@jupyterlab/translation';

import { logAt, logFirst, logForEach, logLast, logSlice, logTotal } from './chunklog';
import { grid, lttb, minMaxGrid } from './downsample';
import { TokenItem } from './protocol';
import { RunState, State, TrainEval, TrainStep, runList } from './store';
import {
  NULL_TRANS,
  chartText,
  formatMs,
  modelLabel,
  timeToFirstToken,
  tokensPerSecond
} from './views/format';

/** Most points a chart draws (about twice the pixels of a side panel's chart). */
export const CHART_MAX_POINTS = 800;

/** One y series of a chart, aligned with the chart's x values (null where it has no point). */
export interface ChartSeries {
  /** The run the series belongs to. */
  run: string;
  label: string;
  values: (number | null)[];
  /** Index of the run in the overlay (picks the colour). */
  colorIndex: number;
  /** Dashed line (eval loss). */
  dashed: boolean;
  /** Draw a line across nulls (sparse series such as eval loss). */
  spanGaps: boolean;
  /** Points only at non-null values, no gaps bridged by a line (sparse eval points). */
  points: boolean;
  /** The y scale: 'y' (left axis, the default) or 'y2' (right axis). */
  scale?: 'y' | 'y2';
}

/** A marker drawn over a chart (the TTFT of a run). */
export interface ChartMarker {
  run: string;
  x: number;
  y: number;
  label: string;
  colorIndex: number;
}

export interface ChartData {
  x: number[];
  series: ChartSeries[];
  markers: ChartMarker[];
  /** Axis titles that depend on the data (default: the chart's own): left, and right when used. */
  yLabel?: string;
  y2Label?: string;
  /** A fixed range of the left y scale (0–1 metrics), instead of one fitted to the data. */
  yRange?: [number, number];
}

export function emptyChart(): ChartData {
  return { x: [], series: [], markers: [] };
}

/** Number of non-null points over all series of a chart. */
export function pointCount(data: ChartData): number {
  let n = 0;
  for (const s of data.series) {
    for (const v of s.values) {
      if (v !== null) {
        n++;
      }
    }
  }
  return n;
}

export function hasLatency(run: RunState): boolean {
  return run.tokens.length > 0;
}

export function hasLoss(run: RunState): boolean {
  return run.steps.length > 0 || run.evals.length > 0;
}

/** Whether a run has generative eval metrics (some `train.eval` carried `metrics`). */
export function hasEvalMetrics(run: RunState): boolean {
  return run.evals.some(e => Object.keys(e.metrics).length > 0);
}

/** Inter-token latency of the kept token `k` (k >= 1), or null when `k - 1` is not its predecessor. */
function itlAt(run: RunState, k: number): number | null {
  const t = logAt(run.tokens, k);
  const p = logAt(run.tokens, k - 1);
  return p.i === t.i - 1 ? Math.max(0, t.ms - p.ms) : null;
}

export interface ChartRuns {
  latency: RunState[];
  loss: RunState[];
  /** Runs with generative eval metrics (the eval metrics chart). */
  evals: RunState[];
}

/**
 * The runs the charts overlay, per chart: the selected runs that have its data (in start order),
 * or, when no selected run has any, the latest run that has (so a chart never sits empty while
 * there is something to show).
 */
export function pickChartRuns(state: State, selected: ReadonlySet<string>): ChartRuns {
  const runs = runList(state);
  const pick = (pred: (r: RunState) => boolean): RunState[] => {
    const chosen = runs.filter(r => selected.has(r.id) && pred(r));
    if (chosen.length > 0) {
      return chosen;
    }
    for (let k = runs.length - 1; k >= 0; k--) {
      if (pred(runs[k])) {
        return [runs[k]];
      }
    }
    return [];
  };
  return { latency: pick(hasLatency), loss: pick(hasLoss), evals: pick(hasEvalMetrics) };
}

/** A short series label for a run: model + quantization (what the overlay compares). */
export function runLabel(run: RunState): string {
  const m = run.model;
  if (m === null) {
    return run.id;
  }
  return `${m.quant ?? m.dtype} · ${run.id}`;
}

/**
 * Inter-token latency (ms between a token and the previous one) per token index, one series per
 * run, aligned on the token index. Token 0 has no inter-token latency: its time to first token
 * is a marker. `window` > 0 keeps only the last `window` token indices. Token indices the store no
 * longer keeps (the per-run cap) are not drawn. More than `maxPoints` indices are drawn as the
 * min and max of each bucket of a grid shared by every run (`minMaxGrid`).
 */
export function latencySeries(
  runs: readonly RunState[],
  window = 0,
  maxPoints = CHART_MAX_POINTS,
  trans: TranslationBundle = NULL_TRANS
): ChartData {
  let hi = -1;
  let kept = Infinity;
  for (const r of runs) {
    const last = logLast(r.tokens);
    const first = logFirst(r.tokens);
    if (last !== undefined && first !== undefined) {
      hi = Math.max(hi, last.i);
      kept = Math.min(kept, first.i);
    }
  }
  if (hi < 0) {
    return emptyChart();
  }
  const lo = Math.max(window > 0 ? Math.max(0, hi - window + 1) : 0, kept);
  const len = hi - lo + 1;
  const g = grid(len, maxPoints);
  const x = g.at.map(k => lo + k);
  const series: ChartSeries[] = [];
  const markers: ChartMarker[] = [];
  runs.forEach((r, colorIndex) => {
    const dense = new Array<number | null>(len).fill(null);
    const n = r.tokens.length;
    for (let k = 1; k < n; k++) {
      const i = logAt(r.tokens, k).i;
      if (i >= lo && i <= hi) {
        dense[i - lo] = itlAt(r, k);
      }
    }
    series.push({
      run: r.id,
      label: runLabel(r),
      values: minMaxGrid(dense, g),
      colorIndex,
      dashed: false,
      spanGaps: false,
      points: false
    });
    const ttft = timeToFirstToken(r);
    if (ttft !== null && lo === 0) {
      const label = chartText(trans).ttftMarker(ttft.toFixed(1));
      markers.push({ run: r.id, x: 0, y: ttft, label, colorIndex });
    }
  });
  return { x, series, markers };
}

/** The steps of a run the loss chart draws: the last `window` (0: all), at most `budget` (LTTB). */
function chartSteps(run: RunState, window: number, budget: number): TrainStep[] {
  const n = run.steps.length;
  const steps = logSlice(run.steps, window > 0 ? Math.max(0, n - window) : 0);
  const keep = lttb(
    steps.map(s => s.step),
    steps.map(s => s.loss),
    budget
  );
  return keep.length === steps.length ? steps : keep.map(k => steps[k]);
}

/**
 * Train loss and eval loss per step, aligned on the union of the steps drawn: per run, a `loss`
 * series and, if it has evals, a dashed `eval` series. `window` > 0 keeps only each run's last
 * `window` steps (and its evals from there on). Each run's train loss is downsampled to its share
 * of `maxPoints` (LTTB: first and last step exact); eval points are never dropped.
 */
export function lossSeries(
  runs: readonly RunState[],
  window = 0,
  maxPoints = CHART_MAX_POINTS,
  trans: TranslationBundle = NULL_TRANS
): ChartData {
  const text = chartText(trans);
  const budget = Math.max(64, Math.floor(maxPoints / Math.max(1, runs.length)));
  const drawn = runs.map(r => {
    const steps = chartSteps(r, window, budget);
    const from = window > 0 && steps.length > 0 ? steps[0].step : -Infinity;
    const evals: TrainEval[] = r.evals.filter(e => e.step >= from);
    return { run: r, steps, evals };
  });
  const stepSet = new Set<number>();
  for (const d of drawn) {
    for (const s of d.steps) {
      stepSet.add(s.step);
    }
    for (const e of d.evals) {
      stepSet.add(e.step);
    }
  }
  if (stepSet.size === 0) {
    return emptyChart();
  }
  const x = Array.from(stepSet).sort((a, b) => a - b);
  const at = new Map<number, number>();
  x.forEach((step, k) => at.set(step, k));
  const series: ChartSeries[] = [];
  drawn.forEach(({ run: r, steps, evals }, k) => {
    // Train loss and eval loss of one run get neighbouring colours.
    const colorIndex = 2 * k;
    const name = runs.length > 1 ? ` · ${r.id}` : '';
    const loss = new Array<number | null>(x.length).fill(null);
    for (const s of steps) {
      loss[at.get(s.step) as number] = s.loss;
    }
    series.push({
      run: r.id,
      label: `${text.trainLoss}${name}`,
      values: loss,
      colorIndex,
      dashed: false,
      spanGaps: true,
      points: false
    });
    if (r.evals.length > 0) {
      const ev = new Array<number | null>(x.length).fill(null);
      for (const e of evals) {
        ev[at.get(e.step) as number] = e.val_loss;
      }
      series.push({
        run: r.id,
        label: `${text.evalLoss}${name}`,
        values: ev,
        colorIndex: colorIndex + 1,
        dashed: true,
        spanGaps: true,
        points: true
      });
    }
  });
  return { x, series, markers: [] };
}

/** The first step of a run the charts draw with `window` > 0 (its last `window` steps), else -Infinity. */
function windowStart(run: RunState, window: number): number {
  const n = run.steps.length;
  return window > 0 && n > 0 ? logAt(run.steps, Math.max(0, n - window)).step : -Infinity;
}

/** The names of a run's eval metrics, in order of first appearance. */
export function evalMetricNames(run: RunState): string[] {
  const names = new Set<string>();
  for (const e of run.evals) {
    for (const name of Object.keys(e.metrics)) {
      names.add(name);
    }
  }
  return Array.from(names);
}

/**
 * Whether a larger value of metric `name` is better: scores (exact match, chrF, BLEU, accuracy)
 * are; losses, perplexities and error rates (WER, CER, TER) are not.
 */
export function higherIsBetter(name: string): boolean {
  return !/loss|ppl|perplexity|error|(^|_)(wer|cer|ter)($|_)/i.test(name);
}

/**
 * Generative eval metrics per step (`train.eval.metrics`), one series per metric per run, aligned on
 * the union of their eval steps; every eval point is drawn (evals are few: never downsampled).
 * Metrics whose values all lie in [0, 1] (exact match, accuracy) and wider ones (chrF, BLEU: 0–100)
 * are drawn on two y axes when both kinds are there (`scale` 'y' left, 'y2' right; the axis titles
 * name their metrics; the left one spans 0–1). `window` > 0 keeps each run's evals from its last `window` steps on.
 */
export function evalMetricSeries(runs: readonly RunState[], window = 0): ChartData {
  const drawn = runs.map(r => {
    const from = windowStart(r, window);
    return { run: r, names: evalMetricNames(r), evals: r.evals.filter(e => e.step >= from) };
  });
  const stepSet = new Set<number>();
  const wide = new Set<string>();
  const all: string[] = [];
  for (const d of drawn) {
    for (const e of d.evals) {
      const names = Object.keys(e.metrics);
      if (names.length > 0) {
        stepSet.add(e.step);
      }
      for (const name of names) {
        const v = e.metrics[name];
        if (!(v >= 0 && v <= 1)) {
          wide.add(name);
        }
      }
    }
    for (const name of d.names) {
      if (!all.includes(name)) {
        all.push(name);
      }
    }
  }
  if (stepSet.size === 0) {
    return emptyChart();
  }
  const x = Array.from(stepSet).sort((a, b) => a - b);
  const at = new Map<number, number>();
  x.forEach((step, k) => at.set(step, k));
  const twoAxes = wide.size > 0 && wide.size < all.length;
  const series: ChartSeries[] = [];
  let colorIndex = 0;
  for (const { run: r, names, evals } of drawn) {
    for (const name of names) {
      const values = new Array<number | null>(x.length).fill(null);
      for (const e of evals) {
        const v = e.metrics[name];
        if (v !== undefined) {
          values[at.get(e.step) as number] = v;
        }
      }
      series.push({
        run: r.id,
        label: runs.length > 1 ? `${name} · ${r.id}` : name,
        values,
        colorIndex: colorIndex++,
        dashed: false,
        spanGaps: true,
        points: true,
        scale: twoAxes && wide.has(name) ? 'y2' : 'y'
      });
    }
  }
  const data: ChartData = { x, series, markers: [] };
  if (wide.size < all.length) {
    data.yRange = [0, 1]; // the left axis holds only 0–1 metrics: their whole range, even when flat
  }
  if (twoAxes) {
    data.yLabel = all.filter(n => !wide.has(n)).join(', ');
    data.y2Label = all.filter(n => wide.has(n)).join(', ');
  }
  return data;
}

/** The `q`-quantile (0..1) of `values` (nearest rank on a sorted copy); null when empty. */
export function percentile(values: readonly number[], q: number): number | null {
  if (values.length === 0) {
    return null;
  }
  const sorted = Float64Array.from(values).sort();
  const k = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[k];
}

/**
 * Inter-token latencies of the last `limit` tokens of a run (live p50/p95 while it runs; the
 * kernel's figures replace them when it ends).
 */
export function recentLatencies(run: RunState, limit = 2048): number[] {
  const n = run.tokens.length;
  const out: number[] = [];
  for (let k = Math.max(1, n - limit); k < n; k++) {
    out.push(Math.max(0, logAt(run.tokens, k).ms - logAt(run.tokens, k - 1).ms));
  }
  return out;
}

/** Tint level 0 (typical) .. 4 (far slower than typical) of a token latency vs a reference. */
export function tintLevel(ms: number, reference: number | null): number {
  if (reference === null || !(reference > 0)) {
    return 0;
  }
  const r = ms / reference;
  if (r < 1.25) {
    return 0;
  }
  if (r < 2) {
    return 1;
  }
  if (r < 3) {
    return 2;
  }
  if (r < 5) {
    return 3;
  }
  return 4;
}

/**
 * Lower bounds of the probability levels 0..3 (p = exp(logprob)); level 4 is below the last.
 * Level 0 is a token the model was sure of, 4 one it found unlikely (sampling chose it anyway).
 */
export const PROB_BOUNDS: readonly number[] = [0.9, 0.5, 0.2, 0.05];

/** Probability level 0 (p >= 90 %) .. 4 (p < 5 %) of a token's log-probability. */
export function probLevel(logprob: number): number {
  const p = Math.exp(logprob);
  const level = PROB_BOUNDS.findIndex(bound => p >= bound);
  return level < 0 ? PROB_BOUNDS.length : level;
}

/** The legend's label of each probability level, from level 0: '≥ 90%', '50–90%', …, '< 5%'. */
export function probLegend(): string[] {
  const pct = (p: number) => `${Math.round(p * 100)}%`;
  const labels = [`≥ ${pct(PROB_BOUNDS[0])}`];
  for (let k = 1; k < PROB_BOUNDS.length; k++) {
    labels.push(`${pct(PROB_BOUNDS[k]).slice(0, -1)}–${pct(PROB_BOUNDS[k - 1])}`);
  }
  labels.push(`< ${pct(PROB_BOUNDS[PROB_BOUNDS.length - 1])}`);
  return labels;
}

/** One row of the run history table (and of the CSV export). */
export interface HistoryRow {
  run: string;
  kind: string;
  model: string;
  status: string;
  ttft_ms: number | null;
  tok_s: number | null;
  itl_p50_ms: number | null;
  itl_p95_ms: number | null;
  tokens: number;
  final_loss: number | null;
  final_val_loss: number | null;
  /** Wall-clock start, ms since the epoch (null until run.start arrived). */
  started: number | null;
}

export function historyRow(run: RunState, trans: TranslationBundle = NULL_TRANS): HistoryRow {
  const m = run.metrics;
  const lastStep = logLast(run.steps);
  const lastEval = run.evals[run.evals.length - 1];
  return {
    run: run.id,
    kind: run.kind,
    model: modelLabel(run, trans),
    status: run.status,
    ttft_ms: hasLatency(run) || m !== null ? timeToFirstToken(run) : null,
    tok_s: tokensPerSecond(run),
    itl_p50_ms: m?.itl_p50_ms ?? null,
    itl_p95_ms: m?.itl_p95_ms ?? null,
    tokens: m !== null ? Math.max(m.tokens, logTotal(run.tokens)) : logTotal(run.tokens),
    final_loss: lastStep !== undefined ? lastStep.loss : null,
    final_val_loss: lastEval !== undefined ? lastEval.val_loss : null,
    started: run.t0
  };
}

/** History rows, newest first. */
export function historyRows(state: State): HistoryRow[] {
  return runList(state)
    .map(r => historyRow(r))
    .reverse();
}

export const CSV_COLUMNS: readonly (keyof HistoryRow)[] = [
  'run',
  'kind',
  'model',
  'status',
  'ttft_ms',
  'tok_s',
  'itl_p50_ms',
  'itl_p95_ms',
  'tokens',
  'final_loss',
  'final_val_loss',
  'started'
];

function csvCell(value: string | number | null): string {
  if (value === null) {
    return '';
  }
  const s = typeof value === 'number' ? String(value) : value;
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** RFC 4180 CSV of the rows (`started` as an ISO 8601 UTC time), CRLF line ends. */
export function historyCsv(rows: readonly HistoryRow[]): string {
  const lines = [CSV_COLUMNS.join(',')];
  for (const row of rows) {
    lines.push(
      CSV_COLUMNS.map(c => {
        const v = row[c];
        if (c === 'started') {
          return csvCell(v === null ? null : new Date(v as number).toISOString());
        }
        return csvCell(v);
      }).join(',')
    );
  }
  return lines.join('\r\n') + '\r\n';
}

/** Columns of a run's tokens CSV (`tokensCsv`). */
export const TOKEN_CSV_COLUMNS: readonly string[] = [
  'i',
  'id',
  'text',
  'ms',
  'logprob',
  'prob',
  'top'
];

/** The CSV cells of one token: the logprob columns empty when the run had logprobs off. */
function tokenCells(t: TokenItem): (string | number | null)[] {
  if (t.logprob === undefined || t.top === undefined) {
    return [t.i, t.id, t.text, t.ms, null, null, null];
  }
  // `top` as a JSON array of {id, text, logprob} (unambiguous whatever the pieces hold; `[]` for
  // logprobs=0, which an empty cell, "off", would not tell apart).
  const top = JSON.stringify(t.top.map(a => ({ id: a.id, text: a.text, logprob: a.logprob })));
  return [t.i, t.id, t.text, t.ms, t.logprob, Math.exp(t.logprob), top];
}

/** RFC 4180 CSV of a run's tokens (columns `TOKEN_CSV_COLUMNS`), CRLF line ends. */
export function tokensCsv(tokens: readonly TokenItem[]): string {
  const lines = [TOKEN_CSV_COLUMNS.join(',')];
  for (const t of tokens) {
    lines.push(tokenCells(t).map(csvCell).join(','));
  }
  return lines.join('\r\n') + '\r\n';
}

/** The planned number of steps of a training run (`config.max_steps`), or null. */
function plannedSteps(run: RunState): number | null {
  const v = run.config['max_steps'];
  return typeof v === 'number' && Number.isFinite(v) && v > 0 ? v : null;
}

/** A chart or summary figure: 3 significant digits, one decimal from 100 on. */
export const num = (v: number): string => (Math.abs(v) >= 100 ? v.toFixed(1) : v.toPrecision(3));

/**
 * The loss chart as one sentence per run, for screen readers: the last train loss and its step
 * (of the planned steps), the lowest one and where, the last eval loss.
 */
export function lossSummary(
  runs: readonly RunState[],
  trans: TranslationBundle = NULL_TRANS
): string {
  const TEXT = chartText(trans);
  const parts: string[] = [];
  for (const r of runs) {
    const last = logLast(r.steps);
    const bits: string[] = [];
    if (last !== undefined) {
      let min = last;
      logForEach(r.steps, s => {
        if (s.loss < min.loss) {
          min = s;
        }
      });
      const planned = plannedSteps(r);
      bits.push(
        TEXT.lossAt(num(last.loss), last.step, planned),
        TEXT.lossMin(num(min.loss), min.step)
      );
    }
    const ev = r.evals[r.evals.length - 1];
    if (ev !== undefined) {
      bits.push(TEXT.evalAt(num(ev.val_loss), ev.step));
    }
    if (bits.length > 0) {
      parts.push(`${runs.length > 1 ? `${r.id}: ` : ''}${bits.join(', ')}.`);
    }
  }
  return parts.length === 0 ? TEXT.noSteps : `${TEXT.lossChart}: ${parts.join(' ')}`;
}

/**
 * The latency chart as one sentence per run, for screen readers: tokens, time to first token,
 * median, 95th percentile and worst inter-token latency of the tokens kept.
 */
export function latencySummary(
  runs: readonly RunState[],
  trans: TranslationBundle = NULL_TRANS
): string {
  const TEXT = chartText(trans);
  const parts: string[] = [];
  for (const r of runs) {
    const itl = recentLatencies(r, Infinity);
    const max = itl.length > 0 ? itl.reduce((a, b) => (b > a ? b : a), 0) : null;
    parts.push(
      `${runs.length > 1 ? `${r.id}: ` : ''}${TEXT.latencyRun(
        logTotal(r.tokens),
        formatMs(timeToFirstToken(r), trans),
        formatMs(percentile(itl, 0.5), trans),
        formatMs(percentile(itl, 0.95), trans),
        formatMs(max, trans)
      )}.`
    );
  }
  return parts.length === 0 ? TEXT.noTokens : `${TEXT.latencyChart}: ${parts.join(' ')}`;
}

/**
 * The eval metrics chart as one sentence per run, for screen readers: per metric, its latest value
 * and step, and its best value (highest, or lowest for a loss or error rate) and step.
 */
export function evalSummary(
  runs: readonly RunState[],
  trans: TranslationBundle = NULL_TRANS
): string {
  const TEXT = chartText(trans);
  const parts: string[] = [];
  for (const r of runs) {
    const bits: string[] = [];
    for (const name of evalMetricNames(r)) {
      const higher = higherIsBetter(name);
      let last: TrainEval | null = null;
      let best: TrainEval | null = null;
      for (const e of r.evals) {
        const v = e.metrics[name];
        if (v === undefined) {
          continue;
        }
        last = e;
        const b = best === null ? undefined : best.metrics[name];
        if (b === undefined || (higher ? v > b : v < b)) {
          best = e;
        }
      }
      if (last !== null && best !== null) {
        bits.push(
          TEXT.metricAt(
            name,
            num(last.metrics[name]),
            last.step,
            num(best.metrics[name]),
            best.step,
            higher
          )
        );
      }
    }
    if (bits.length > 0) {
      parts.push(`${runs.length > 1 ? `${r.id}: ` : ''}${bits.join(', ')}.`);
    }
  }
  return parts.length === 0 ? TEXT.noEvalMetrics : `${TEXT.evalChart}: ${parts.join(' ')}`;
}
