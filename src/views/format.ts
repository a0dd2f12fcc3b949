/**
 * Pure formatting helpers for the panel (no DOM; unit-tested), and `chartText`: the user-visible
 * sentences of the render path (elision note, chart summaries) in one place, for translation.
 *
 * Every helper that returns words or units takes the panel's `TranslationBundle` (`trans`, default
 * the untranslated one: English as written).
 */

import { TranslationBundle } from '@jupyterlab/translation';

import { logLast, logTotal } from '../chunklog';
import { translationBundle } from '../i18n';
import { RunState } from '../store';

/** The untranslated bundle (the default of every `trans` parameter). */
export const NULL_TRANS: TranslationBundle = translationBundle();

export function formatParams(n: number): string {
  if (n >= 1e9) {
    return `${(n / 1e9).toFixed(1)}B`;
  }
  if (n >= 1e6) {
    return `${(n / 1e6).toFixed(1)}M`;
  }
  if (n >= 1e3) {
    return `${(n / 1e3).toFixed(1)}K`;
  }
  return String(n);
}

export function formatMs(ms: number | null | undefined, trans = NULL_TRANS): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) {
    return '–';
  }
  if (ms >= 10000) {
    return trans.__('%1 s', (ms / 1000).toFixed(1));
  }
  if (ms >= 100) {
    return trans.__('%1 ms', Math.round(ms));
  }
  return trans.__('%1 ms', ms.toFixed(1));
}

/** A rate's figure without its unit: '180', '12.5' ('–' when unknown). */
export function rateValue(tokS: number | null | undefined): string {
  if (tokS === null || tokS === undefined || !Number.isFinite(tokS)) {
    return '–';
  }
  return tokS >= 100 ? String(Math.round(tokS)) : tokS.toFixed(1);
}

export function formatRate(tokS: number | null | undefined, trans = NULL_TRANS): string {
  const value = rateValue(tokS);
  return value === '–' ? value : trans.__('%1 tok/s', value);
}

/**
 * Tokens per second: the kernel's figure once the run ended, else a live estimate from the
 * token timestamps (decode rate after the first token).
 */
export function tokensPerSecond(run: RunState): number | null {
  if (run.metrics !== null && run.metrics.tok_s !== null) {
    return run.metrics.tok_s;
  }
  const n = logTotal(run.tokens);
  const first = run.firstToken;
  const last = logLast(run.tokens);
  if (n < 2 || first === null || last === undefined) {
    return null;
  }
  const span = last.ms - first.ms;
  return span > 0 ? ((n - 1) * 1000) / span : null;
}

/** Time to first token: the kernel's figure once ended, else the first token's timestamp. */
export function timeToFirstToken(run: RunState): number | null {
  if (run.metrics !== null && run.metrics.ttft_ms !== null) {
    return run.metrics.ttft_ms;
  }
  return run.firstToken !== null ? run.firstToken.ms : null;
}

export function modelLabel(run: RunState, trans = NULL_TRANS): string {
  const m = run.model;
  if (m === null) {
    return trans.__('(model unknown)');
  }
  const parts = [m.name, formatParams(m.params), m.dtype];
  if (m.quant !== null) {
    parts.push(m.quant);
  }
  parts.push(m.device);
  return parts.join(' · ');
}

export function cancelLabel(run: RunState, trans = NULL_TRANS): string {
  const c = run.cancel;
  if (c === null) {
    return trans.__('Cancel');
  }
  switch (c.state) {
    case 'pending':
      return trans.__('cancelling…');
    case 'acknowledged':
      return trans.__('cancel acknowledged');
    case 'refused':
      return c.error ? trans.__('cancel refused: %1', c.error) : trans.__('cancel refused');
    case 'failed':
      return c.error ? trans.__('cancel failed: %1', c.error) : trans.__('cancel failed');
  }
}

/** Whitespace that would be invisible in a token piece, and the sign shown for it. */
const VISIBLE_WHITESPACE: { [ch: string]: string } = {
  ' ': '·',
  '\n': '↵',
  '\r': '␍',
  '\t': '⇥'
};

/**
 * A token piece with its whitespace made visible (`·` space, `↵` newline, `⇥` tab, `␍` CR),
 * so ' a' and 'a', or '\n' and '', can be told apart in the inspector; '∅' for an empty piece.
 */
export function visiblePiece(text: string): string {
  if (text === '') {
    return '∅';
  }
  return text.replace(/[ \n\r\t]/g, ch => VISIBLE_WHITESPACE[ch]);
}

/** A log-probability as a percentage: '90.5%', '3.02%', '< 0.01%'. */
export function formatProb(logprob: number): string {
  const pct = Math.exp(logprob) * 100;
  if (!Number.isFinite(pct)) {
    return '–';
  }
  if (pct >= 10) {
    return `${pct.toFixed(1)}%`;
  }
  if (pct >= 0.01) {
    return `${pct.toFixed(2)}%`;
  }
  return '< 0.01%';
}

/** User-visible sentences of the run cards and charts (one place, for translation). */
export function chartText(trans: TranslationBundle = NULL_TRANS) {
  const count = (n: number): string => n.toLocaleString('en');
  return {
    /** The card's note when the per-run cap dropped the oldest tokens. */
    elided: (dropped: number, kept: number): string =>
      trans._n(
        '%2 earlier token not kept in the panel (it keeps the last %3; setting "Tokens per run"). ' +
          'The full text is in the kernel: the TokenStream (.text, .tokens) and aigc_lab.recorder.',
        '%2 earlier tokens not kept in the panel (it keeps the last %3; setting "Tokens per run"). ' +
          'The full text is in the kernel: the TokenStream (.text, .tokens) and aigc_lab.recorder.',
        dropped,
        count(dropped),
        count(kept)
      ),
    lossChart: trans.__('Loss chart'),
    latencyChart: trans.__('Inter-token latency chart'),
    evalChart: trans.__('Eval metrics chart'),
    noSteps: trans.__('Loss chart: no training steps yet.'),
    noTokens: trans.__('Inter-token latency chart: no tokens yet.'),
    noEvalMetrics: trans.__('Eval metrics chart: no generative eval metrics yet.'),
    lossAt: (loss: string, step: number, planned: number | null): string =>
      planned === null
        ? trans.__('train loss %1 at step %2', loss, step)
        : trans.__('train loss %1 at step %2 of %3', loss, step, planned),
    lossMin: (loss: string, step: number): string => trans.__('min %1 at step %2', loss, step),
    evalAt: (loss: string, step: number): string => trans.__('eval loss %1 at step %2', loss, step),
    /** One metric of the eval chart's summary: its latest value and its best one. */
    metricAt: (
      name: string,
      value: string,
      step: number,
      best: string,
      bestStep: number,
      higher: boolean
    ): string =>
      higher
        ? trans.__(
            '%1 %2 at step %3 (best %4, highest, at step %5)',
            name,
            value,
            step,
            best,
            bestStep
          )
        : trans.__(
            '%1 %2 at step %3 (best %4, lowest, at step %5)',
            name,
            value,
            step,
            best,
            bestStep
          ),
    latencyRun: (tokens: number, ttft: string, p50: string, p95: string, max: string): string =>
      trans._n(
        '%1 token, TTFT %2, inter-token latency p50 %3, p95 %4, max %5',
        '%1 tokens, TTFT %2, inter-token latency p50 %3, p95 %4, max %5',
        tokens,
        ttft,
        p50,
        p95,
        max
      ),
    trainLoss: trans.__('train loss'),
    evalLoss: trans.__('eval loss'),
    ttftMarker: (ms: string): string => trans.__('TTFT %1 ms', ms)
  };
}

/** The sentences of `chartText` in English as written (no translator). */
export const TEXT = chartText();
