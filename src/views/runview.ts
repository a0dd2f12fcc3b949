/**
 * The DOM of one run. Updated incrementally: new token text is appended to one Text node
 * (`appendData`), the header fields are rewritten only when their text changes, so a run with
 * thousands of tokens stays as cheap as a run with ten.
 *
 * DOM contract (used by the UI tests):
 *   .aigc-run[data-run-id][data-kind][data-status][data-token-count][data-dups][data-gaps]
 *     .aigc-run-header   kind, model, status, token count, tok/s, TTFT
 *     .aigc-run-text     textContent == concatenation of every token piece received
 *     button.aigc-cancel shown while running only; label 'cancelling…' / 'cancel acknowledged' …
 *     .aigc-cancel-state the cancel request's state, kept after the run ended
 */

import { RunState } from '../store';
import {
  cancelLabel,
  formatMs,
  formatRate,
  modelLabel,
  timeToFirstToken,
  tokensPerSecond
} from './format';
import { Sparkline } from './sparkline';

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className: string,
  parent?: HTMLElement
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  node.className = className;
  if (parent) {
    parent.appendChild(node);
  }
  return node;
}

function setText(node: HTMLElement, text: string): void {
  if (node.textContent !== text) {
    node.textContent = text;
  }
}

function setAttr(node: Element, name: string, value: string): void {
  if (node.getAttribute(name) !== value) {
    node.setAttribute(name, value);
  }
}

export class RunView {
  constructor(runId: string, onCancel: (runId: string) => void) {
    this.runId = runId;
    this.node = el('div', 'aigc-run');
    this.node.setAttribute('data-run-id', runId);

    // Header: a first row that does not change while tokens stream (so the cancel button stays
    // put and is easy to click), and a row of live figures.
    const header = el('div', 'aigc-run-header', this.node);
    const title = el('div', 'aigc-run-title', header);
    this._kind = el('span', 'aigc-run-kind', title);
    this._status = el('span', 'aigc-run-status', title);
    this._model = el('span', 'aigc-run-model', title);
    this._cancel = el('button', 'aigc-cancel jp-mod-styled', title);
    this._cancel.type = 'button';
    this._cancel.addEventListener('click', () => {
      if (!this._cancel.disabled) {
        onCancel(this.runId);
      }
    });
    const stats = el('div', 'aigc-run-stats', header);
    this._count = el('span', 'aigc-run-tokens', stats);
    this._speed = el('span', 'aigc-run-speed', stats);
    this._ttft = el('span', 'aigc-run-ttft', stats);
    this._cancelState = el('span', 'aigc-cancel-state', stats);

    this._extra = el('div', 'aigc-run-extra', this.node);
    this._error = el('div', 'aigc-run-error', this.node);
    this._error.hidden = true;
    this._train = el('div', 'aigc-run-train', this.node);
    this._train.hidden = true;

    this._textBox = el('div', 'aigc-run-text', this.node);
    this._textNode = document.createTextNode('');
    this._textBox.appendChild(this._textNode);
  }

  readonly runId: string;
  readonly node: HTMLDivElement;

  /** Bring the DOM up to date with `run`. Cheap when little changed. */
  update(run: RunState): void {
    if (run === this._last) {
      return;
    }
    const previous = this._last;
    this._last = run;
    const n = this.node;

    // Text: append only the pieces not rendered yet.
    const tokens = run.tokens;
    if (previous !== null && tokens.length < this._rendered) {
      // Cannot happen with the reducer (tokens only grow), but stay correct if it does.
      this._textNode.data = '';
      this._rendered = 0;
    }
    if (tokens.length > this._rendered) {
      const box = this._textBox;
      const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 8;
      let chunk = '';
      for (let k = this._rendered; k < tokens.length; k++) {
        chunk += tokens[k].text;
      }
      this._textNode.appendData(chunk);
      this._rendered = tokens.length;
      if (atBottom) {
        box.scrollTop = box.scrollHeight;
      }
    }

    setAttr(n, 'data-kind', run.kind);
    setAttr(n, 'data-status', run.status);
    setAttr(n, 'data-token-count', String(this._rendered));
    setAttr(n, 'data-dups', String(run.dups));
    setAttr(n, 'data-gaps', String(run.gaps));

    setText(this._kind, run.kind);
    setText(this._model, modelLabel(run));
    setText(this._status, run.status);
    this._status.className = `aigc-run-status aigc-status-${run.status}`;
    setText(this._count, `${this._rendered} tok`);
    const ended = run.status !== 'running';
    const rate = tokensPerSecond(run);
    const ttft = timeToFirstToken(run);
    setText(this._speed, rate === null ? '' : formatRate(rate));
    setText(this._ttft, ttft === null ? '' : `TTFT ${formatMs(ttft)}`);

    const extra: string[] = [];
    if (ended && run.metrics !== null) {
      const m = run.metrics;
      if (m.itl_p50_ms !== null) {
        extra.push(`ITL p50 ${formatMs(m.itl_p50_ms)}`);
      }
      if (m.itl_p95_ms !== null) {
        extra.push(`p95 ${formatMs(m.itl_p95_ms)}`);
      }
      if (m.peak_mem_mb !== null) {
        extra.push(`peak ${Math.round(m.peak_mem_mb)} MB`);
      }
    }
    if (run.dups > 0) {
      extra.push(`${run.dups} duplicate${run.dups === 1 ? '' : 's'} ignored`);
    }
    if (run.gaps > 0) {
      extra.push(`${run.gaps} gap${run.gaps === 1 ? '' : 's'} (tokens lost)`);
    }
    setText(this._extra, extra.join(' · '));

    this._error.hidden = run.error === null;
    setText(this._error, run.error ?? '');

    // The button is there while the run runs; the fate of a cancel request stays readable in
    // .aigc-cancel-state after the run ended.
    this._cancel.hidden = run.status !== 'running';
    setText(this._cancel, run.cancel === null ? 'Cancel' : cancelLabel(run));
    this._cancel.disabled = run.cancel !== null && run.cancel.state !== 'failed';
    setAttr(this._cancel, 'data-cancel-state', run.cancel?.state ?? '');
    setText(this._cancelState, run.cancel === null ? '' : cancelLabel(run));
    setAttr(this._cancelState, 'data-cancel-state', run.cancel?.state ?? '');

    this._updateTrain(run, previous);
  }

  private _updateTrain(run: RunState, previous: RunState | null): void {
    const hasTrain = run.steps.length > 0 || run.evals.length > 0 || run.checkpoints.length > 0;
    this._train.hidden = !hasTrain;
    if (!hasTrain) {
      return;
    }
    if (
      previous !== null &&
      previous.steps === run.steps &&
      previous.evals === run.evals &&
      previous.checkpoints === run.checkpoints &&
      this._trainText !== null
    ) {
      return;
    }
    if (this._trainText === null) {
      this._trainText = el('div', 'aigc-train-summary', this._train);
      this._chart = new Sparkline('aigc-loss-chart');
      this._train.appendChild(this._chart.node);
    }
    const parts: string[] = [];
    const last = run.steps[run.steps.length - 1];
    if (last !== undefined) {
      parts.push(`step ${last.step}`, `loss ${last.loss.toFixed(4)}`, `lr ${last.lr.toExponential(2)}`);
      if (last.tok_s !== null) {
        parts.push(formatRate(last.tok_s));
      }
    }
    const ev = run.evals[run.evals.length - 1];
    if (ev !== undefined) {
      parts.push(`val_loss ${ev.val_loss.toFixed(4)}`);
      if (ev.ppl !== null) {
        parts.push(`ppl ${ev.ppl.toFixed(2)}`);
      }
    }
    const ck = run.checkpoints[run.checkpoints.length - 1];
    if (ck !== undefined) {
      parts.push(`checkpoint @${ck.step}`);
    }
    setText(this._trainText, parts.join(' · '));
    this._chart?.update(
      [
        { className: 'aigc-loss-line', points: run.steps.map(s => [s.step, s.loss] as const) },
        { className: 'aigc-eval-line', points: run.evals.map(e => [e.step, e.val_loss] as const) }
      ],
      'training loss (line) and eval loss'
    );
  }

  private _last: RunState | null = null;
  private _rendered = 0;
  private _kind: HTMLSpanElement;
  private _model: HTMLSpanElement;
  private _status: HTMLSpanElement;
  private _count: HTMLSpanElement;
  private _speed: HTMLSpanElement;
  private _ttft: HTMLSpanElement;
  private _cancel: HTMLButtonElement;
  private _cancelState: HTMLSpanElement;
  private _extra: HTMLDivElement;
  private _error: HTMLDivElement;
  private _train: HTMLDivElement;
  private _trainText: HTMLDivElement | null = null;
  private _chart: Sparkline | null = null;
  private _textBox: HTMLDivElement;
  private _textNode: Text;
}
