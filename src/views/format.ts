/**
 * Pure formatting helpers for the panel (no DOM; unit-tested), and `TEXT`: the user-visible
 * sentences of the render path (elision note, chart summaries) in one place, for translation.
 */

import { logLast, logTotal } from '../chunklog';
import { RunState } from '../store';

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

export function formatMs(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) {
    return '–';
  }
  if (ms >= 10000) {
    return `${(ms / 1000).toFixed(1)} s`;
  }
  if (ms >= 100) {
    return `${Math.round(ms)} ms`;
  }
  return `${ms.toFixed(1)} ms`;
}

export function formatRate(tokS: number | null | undefined): string {
  if (tokS === null || tokS === undefined || !Number.isFinite(tokS)) {
    return '–';
  }
  return tokS >= 100 ? `${Math.round(tokS)} tok/s` : `${tokS.toFixed(1)} tok/s`;
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

export function modelLabel(run: RunState): string {
  const m = run.model;
  if (m === null) {
    return '(model unknown)';
  }
  const parts = [m.name, formatParams(m.params), m.dtype];
  if (m.quant !== null) {
    parts.push(m.quant);
  }
  parts.push(m.device);
  return parts.join(' · ');
}

export function cancelLabel(run: RunState): string {
  const c = run.cancel;
  if (c === null) {
    return 'Cancel';
  }
  switch (c.state) {
    case 'pending':
      return 'cancelling…';
    case 'acknowledged':
      return 'cancel acknowledged';
    case 'refused':
      return `cancel refused${c.error ? `: ${c.error}` : ''}`;
    case 'failed':
      return `cancel failed${c.error ? `: ${c.error}` : ''}`;
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
export const TEXT = {
  /** The card's note when the per-run cap dropped the oldest tokens. */
  elided: (dropped: number, kept: number): string =>
    `${dropped.toLocaleString('en')} earlier token${dropped === 1 ? '' : 's'} not kept in the panel ` +
    `(it keeps the last ${kept.toLocaleString('en')}; setting "Tokens per run"). ` +
    'The full text is in the kernel: the TokenStream (.text, .tokens) and aigc_lab.recorder.',
  lossChart: 'Loss chart',
  latencyChart: 'Inter-token latency chart',
  noSteps: 'Loss chart: no training steps yet.',
  noTokens: 'Inter-token latency chart: no tokens yet.',
  lossAt: (loss: string, step: number, planned: number | null): string =>
    `train loss ${loss} at step ${step}${planned === null ? '' : ` of ${planned}`}`,
  lossMin: (loss: string, step: number): string => `min ${loss} at step ${step}`,
  evalAt: (loss: string, step: number): string => `eval loss ${loss} at step ${step}`,
  latencyRun: (tokens: number, ttft: string, p50: string, p95: string, max: string): string =>
    `${tokens} token${tokens === 1 ? '' : 's'}, TTFT ${ttft}, inter-token latency p50 ${p50}, p95 ${p95}, max ${max}`
};
