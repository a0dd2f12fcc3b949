/**
 * The DOM of one run. Updated incrementally: only the tokens not rendered yet are appended (one
 * DocumentFragment per update, i.e. per animation frame), the header fields are rewritten only
 * when their text changes, so a run with thousands of tokens stays as cheap as a run with ten.
 *
 * Token stream: while tinting is on, each of the first `TINT_MAX_TOKENS` tokens is a span whose
 * background is tinted by its latency relative to the run's typical inter-token latency (class
 * `aigc-tint-0..4`; the first token, whose latency is the TTFT, is `aigc-tok-first`) and whose
 * tooltip gives index, token id, piece and ms; later tokens (or all, with tinting off) are
 * appended to one Text node. A blinking caret (CSS) follows the text while the run runs.
 *
 * Token inspector (runs generated with `logprobs=k`): their tokens are spans even with tinting off
 * (up to the same `TINT_MAX_TOKENS`), each also classed by probability (`aigc-prob-0..4`, see
 * `probLevel`). The card's "Probability" toggle switches the colouring between latency and
 * probability with one attribute (`data-color`) that the CSS keys on: both class sets are written
 * when a span is created (within the `SPANS_PER_FRAME` budget), so a switch creates or re-classes
 * no node at all, whatever the run's length; the browser restyles the spans in one pass (a
 * background change, no layout). The spans form one tab stop (roving tabindex: Tab reaches the
 * current token, arrow keys / Home / End move between tokens); hovering or focusing one opens the
 * popover of `inspector.ts` with its alternatives. "Tokens CSV" downloads every token of a
 * generate run that the panel keeps (`tokensCsv`).
 *
 * Bounded: the header (`updateHeader`) is cheap and kept current for every card; the token stream
 * is rendered only for the card on screen (`update` with the frame's `Budget`, shared by the
 * whole panel), and `release()` drops it when the card is hidden (it is rebuilt, budgeted, when
 * shown again). When the store's per-run cap drops the oldest tokens, their DOM chunks go too, and
 * `.aigc-run-elided` says how many are not kept and that the kernel holds the full text.
 *
 * DOM contract (used by the UI tests):
 *   .aigc-run[data-run-id][data-kind][data-status][data-token-count][data-dups][data-gaps]
 *            data-token-count: tokens received, less those a shown card has still to render (so
 *            it agrees with the text once it equals the kernel's count; a hidden card renders
 *            nothing and shows the received count); [data-rendered-count] tokens rendered or
 *            elided in this card's DOM; [data-elided] tokens dropped by the cap
 *            [data-step-count][data-last-step]   training steps received, and the last one's number
 *            [data-t0]          the run's start (ms since the epoch, kernel clock; '' until run.start)
 *     .aigc-run-header   kind, status, model, cancel button
 *     .aigc-metrics      .aigc-metric[data-metric=model|ttft|toks|p50|p95|tokens|status]
 *     .aigc-run-elided   shown when the cap dropped tokens: how many, where the full text is
 *     .aigc-run-text     textContent == concatenation of every token piece kept (`runText`)
 *       div.aigc-chunk   blocks of consecutive tokens (see `_chunkFor`)
 *         span.aigc-tok[data-i][title]   (tinted tokens)
 *     button.aigc-cancel shown while running only; label 'cancelling…' / 'cancel acknowledged' …;
 *                        enabled again after a refused or failed cancel
 *     button.aigc-interrupt  "Interrupt kernel", shown while running after a refused or failed cancel
 *     .aigc-cancel-state the cancel request's state, kept after the run ended
 *   .aigc-run[data-logprobs=true|false][data-color=latency|probability]
 *     .aigc-tok-tools    shown for generate runs
 *       button.aigc-prob-toggle[aria-pressed]   only when the run has logprobs
 *       .aigc-prob-legend  span.aigc-prob-key.aigc-prob-N per level, shown in probability mode
 *       button.aigc-tokens-csv
 *     span.aigc-tok.aigc-tok-lp.aigc-prob-N[tabindex]  tokens with logprobs (no title: popover)
 *     span.aigc-tok.aigc-tok-draft   speculative runs: tokens the draft proposed and the target accepted
 *   .aigc-run-stepper    the header's "stepper · layers layers" (run.start config), when the kernel says
 *   section.aigc-chat[data-template][data-turn-count][data-shown-turns]   chat runs only (`config.chat`):
 *       the conversation the streamed reply answers, above it
 *     .aigc-chat-template   the chat template's name
 *     .aigc-chat-earlier    shown when there are more than `CHAT_VISIBLE_TURNS` turns: "k earlier turns"
 *       button.aigc-chat-expand[aria-expanded][aria-controls]   shows them all, or the last ones again
 *     ol.aigc-chat-turns[aria-label] > li.aigc-chat-turn[data-role][data-turn][aria-posinset][aria-setsize]
 *       .aigc-chat-role (System / User / Assistant / Tool), .aigc-chat-content (the turn's text)
 *   .aigc-chat-reply-role  chat runs: "Assistant · reply", the label (aria-labelledby) of .aigc-run-text,
 *                          which then has role=group and data-role=assistant
 */

import { TranslationBundle } from '@jupyterlab/translation';

import { ChunkLog, logAt, logLast, logToArray, logTotal } from '../chunklog';
import { ChatConfig, ChatRole, JSONObject, TokenItem, chatOf } from '../protocol';
import { Budget, SPANS_PER_FRAME } from '../scheduler';
import {
  num,
  percentile,
  probLegend,
  probLevel,
  recentLatencies,
  tintLevel,
  tokensCsv
} from '../series';
import { RunState } from '../store';
import { prefersReducedMotion } from './chart';
import { downloadText } from './download';
import {
  NULL_TRANS,
  cancelLabel,
  chartText,
  formatMs,
  formatParams,
  formatRate,
  rateValue,
  timeToFirstToken,
  tokensPerSecond
} from './format';
import { TokenPopover } from './inspector';

/** Tokens beyond this many per run are appended as plain text (no span, no tint). */
export const TINT_MAX_TOKENS = 5000;

/** The panel's per-frame span budget (`scheduler.ts`), the default budget of `update`. */
export { SPANS_PER_FRAME };

/** A budget of one frame's spans and no time limit (an update outside the panel's scheduler). */
function frameUnits(): Budget {
  return new Budget(Infinity, SPANS_PER_FRAME);
}

/** A chat run's card shows its last this many turns; the earlier ones on demand. */
export const CHAT_VISIBLE_TURNS = 6;

let replyLabelCount = 0;

/** The label of a chat role. */
export function roleText(role: ChatRole, trans: TranslationBundle = NULL_TRANS): string {
  switch (role) {
    case 'system':
      return trans.__('System');
    case 'user':
      return trans.__('User');
    case 'assistant':
      return trans.__('Assistant');
    case 'tool':
      return trans.__('Tool');
  }
}

/** A chunk of the token stream is closed at the next line end once it holds this many tokens. */
export const CHUNK_SOFT_TOKENS = 128;
/** ... and closed in any case at this many (see `RunView._chunkFor`). */
export const CHUNK_MAX_TOKENS = 512;

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

/** The translated forms of a token's tooltip, with `%1`..`%4` still to fill (`tokenTitle`). */
interface TitleForms {
  first: string;
  later: string;
  draft: string;
}

/** Per translation bundle: a card creates thousands of tooltips, gettext is looked up once. */
const titleForms = new WeakMap<TranslationBundle, TitleForms>();

function formsOf(trans: TranslationBundle): TitleForms {
  let forms = titleForms.get(trans);
  if (forms === undefined) {
    // The placeholders go in as themselves, so a translation may reorder them.
    const p: [string, string, string, string] = ['%1', '%2', '%3', '%4'];
    forms = {
      first: trans.__('#%1 · id %2 · %3 · TTFT %4 ms', ...p),
      later: trans.__('#%1 · id %2 · %3 · %4 ms', ...p),
      draft: trans.__('from the draft')
    };
    titleForms.set(trans, forms);
  }
  return forms;
}

/** The tooltip of a token: index, id, piece and latency. */
export function tokenTitle(
  item: TokenItem,
  latency: number,
  first: boolean,
  trans: TranslationBundle = NULL_TRANS
): string {
  const forms = formsOf(trans);
  const values = [
    String(item.i),
    item.id === null ? '–' : String(item.id),
    JSON.stringify(item.text),
    latency.toFixed(1)
  ];
  // One pass over the form: a piece that itself holds "%2" is not filled again.
  const title = (first ? forms.first : forms.later).replace(
    /%([1-4])/g,
    (_, d: string) => values[Number(d) - 1]
  );
  return item.draft === true ? `${title} · ${forms.draft}` : title;
}

/** A run status as the card shows it (the `data-status` attribute keeps the protocol's word). */
export function statusText(status: string, trans: TranslationBundle = NULL_TRANS): string {
  switch (status) {
    case 'running':
      return trans.__('running');
    case 'ok':
      return trans.__('ok');
    case 'cancelled':
      return trans.__('cancelled');
    case 'error':
      return trans.__('error');
    case 'interrupted':
      return trans.__('interrupted');
    default:
      return status;
  }
}

/** A run kind as the card shows it. */
export function kindText(kind: string, trans: TranslationBundle = NULL_TRANS): string {
  switch (kind) {
    case 'generate':
      return trans.__('generate');
    case 'train':
      return trans.__('train');
    case 'bench':
      return trans.__('bench');
    case 'unknown':
      return trans.__('unknown');
    default:
      return kind;
  }
}

/** The index in `tokens` (ascending by `i`, as the store keeps them) of token `i`, or -1. */
export function findToken(tokens: ChunkLog<TokenItem>, i: number): number {
  let lo = 0;
  let hi = tokens.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const at = logAt(tokens, mid).i;
    if (at === i) {
      return mid;
    }
    if (at < i) {
      lo = mid + 1;
    } else {
      hi = mid - 1;
    }
  }
  return -1;
}

/** The inspectable token span (one with logprobs) that `target` is, or null. */
function inspectable(target: EventTarget | null): HTMLElement | null {
  return target instanceof HTMLElement && target.classList.contains('aigc-tok-lp') ? target : null;
}

/** The next (`dir` 1) or previous (-1) inspectable token span after `span`, across chunks. */
function neighbour(span: HTMLElement, dir: 1 | -1): HTMLElement | null {
  let node: Element = span;
  for (;;) {
    let next = dir > 0 ? node.nextElementSibling : node.previousElementSibling;
    if (next === null) {
      const chunk = node.parentElement;
      const other = dir > 0 ? chunk?.nextElementSibling : chunk?.previousElementSibling;
      next = other ? (dir > 0 ? other.firstElementChild : other.lastElementChild) : null;
      if (next === null) {
        return null;
      }
    }
    const found = inspectable(next);
    if (found !== null) {
      return found;
    }
    node = next;
  }
}

/**
 * A chunk of the token stream that no token will be added to: from now on the browser skips its
 * layout and paint while it is off screen (`content-visibility: auto`, class `aigc-chunk-closed`),
 * holding the height it has now (read at the end of a frame, when the layout is clean).
 */
function closeChunk(chunk: HTMLDivElement): void {
  if (!chunk.isConnected) {
    return;
  }
  const h = chunk.offsetHeight;
  if (h > 0) {
    chunk.style.setProperty('contain-intrinsic-size', `auto ${h}px`);
    chunk.classList.add('aigc-chunk-closed');
  }
}

/** A file name for a run's tokens CSV. */
export function tokensCsvName(runId: string): string {
  return `aigc-lab-tokens-${runId.replace(/[^\w.-]+/g, '_')}.csv`;
}

/** The nodes of a card's chat section. */
interface ChatView {
  node: HTMLElement;
  template: HTMLSpanElement;
  earlier: HTMLDivElement;
  note: HTMLSpanElement;
  expand: HTMLButtonElement;
  list: HTMLOListElement;
}

interface Metric {
  node: HTMLSpanElement;
  value: HTMLSpanElement;
}

function metricLabels(trans: TranslationBundle): [string, string][] {
  return [
    ['model', trans.__('model')],
    ['ttft', trans.__('TTFT')],
    ['toks', trans.__('tok/s')],
    ['p50', trans.__('ITL p50')],
    ['p95', trans.__('p95')],
    ['tokens', trans.__('tokens')],
    ['status', trans.__('status')]
  ];
}

export class RunView {
  constructor(
    runId: string,
    onCancel: (runId: string) => void,
    onInterrupt: (runId: string) => void = () => undefined,
    download: (filename: string, text: string) => void = downloadText,
    trans: TranslationBundle = NULL_TRANS
  ) {
    this.runId = runId;
    this._trans = trans;
    this._popover = new TokenPopover(trans);
    this.node = el('div', 'aigc-run');
    this.node.setAttribute('data-run-id', runId);

    // Header: a first row that does not change while tokens stream (so the cancel button stays
    // put and is easy to click), then the metrics strip.
    const header = el('div', 'aigc-run-header', this.node);
    const title = el('div', 'aigc-run-title', header);
    this._kind = el('span', 'aigc-run-kind', title);
    this._status = el('span', 'aigc-run-status', title);
    this._model = el('span', 'aigc-run-model', title);
    this._stepper = el('span', 'aigc-run-stepper', title);
    this._stepper.title = trans.__(
      'How it ran: the stepper and the layers the engine chose (al.infer.explain says why)'
    );
    this._stepper.hidden = true;
    this._cancel = el('button', 'aigc-cancel jp-mod-styled', title);
    this._cancel.type = 'button';
    this._cancel.title = trans.__('Stop this run (sends a cancel request to the kernel)');
    this._cancel.addEventListener('click', () => {
      if (!this._cancel.disabled) {
        onCancel(this.runId);
      }
    });
    // Offered when a cancel was refused or not answered: the run may be a cell that ignores it.
    this._interrupt = el('button', 'aigc-interrupt jp-mod-styled', title);
    this._interrupt.type = 'button';
    this._interrupt.textContent = trans.__('Interrupt kernel');
    this._interrupt.title = trans.__(
      'The cancel request did not stop the run: interrupt the kernel'
    );
    this._interrupt.hidden = true;
    this._interrupt.addEventListener('click', () => onInterrupt(this.runId));
    const strip = el('div', 'aigc-metrics', header);
    for (const [key, label] of metricLabels(trans)) {
      const node = el('span', 'aigc-metric', strip);
      node.setAttribute('data-metric', key);
      const l = el('span', 'aigc-metric-label', node);
      l.textContent = label;
      const value = el('span', 'aigc-metric-value', node);
      this._metrics.set(key, { node, value });
    }
    const stats = el('div', 'aigc-run-stats', header);
    this._cancelState = el('span', 'aigc-cancel-state', stats);

    this._extra = el('div', 'aigc-run-extra', this.node);
    this._error = el('div', 'aigc-run-error', this.node);
    this._error.hidden = true;
    this._train = el('div', 'aigc-run-train', this.node);
    this._train.hidden = true;
    this._trainText = el('div', 'aigc-train-summary', this._train);

    this._chat = this._buildChat();

    this._tools = el('div', 'aigc-tok-tools', this.node);
    this._tools.hidden = true;
    this._probToggle = el('button', 'aigc-prob-toggle jp-mod-styled', this._tools);
    this._probToggle.type = 'button';
    this._probToggle.textContent = trans.__('Probability');
    this._probToggle.title = trans.__(
      'Colour the tokens by their probability under the model instead of their latency'
    );
    this._probToggle.addEventListener('click', () => {
      this.probability = !this._probability;
    });
    this._legend = this._buildLegend();
    const csv = el('button', 'aigc-tokens-csv jp-mod-styled', this._tools);
    csv.type = 'button';
    csv.textContent = trans.__('Tokens CSV');
    csv.title = trans.__("Download this run's tokens as CSV: i, id, text, ms, logprob, prob, top");
    csv.addEventListener('click', () =>
      download(
        tokensCsvName(this.runId),
        tokensCsv(this._last === null ? [] : logToArray(this._last.tokens))
      )
    );
    this.probability = false;

    this._elided = el('div', 'aigc-run-elided', this.node);
    this._elided.hidden = true;
    this._replyRole = el('div', 'aigc-chat-reply-role', this.node);
    this._replyRole.id = `aigc-chat-reply-${++replyLabelCount}`;
    this._replyRole.setAttribute('data-role', 'assistant');
    this._replyRole.textContent = trans.__('Assistant · reply');
    this._replyRole.hidden = true;
    this._textBox = el('div', 'aigc-run-text', this.node);
    this._textNode = document.createTextNode('');
    this._listenForInspection();
    // Follow the stream while the user is at its end (scrolled up: stay where they are).
    this._textBox.addEventListener(
      'scroll',
      () => {
        const box = this._textBox;
        this._follow = box.scrollHeight - box.scrollTop - box.clientHeight < 8;
      },
      { passive: true }
    );
  }

  readonly runId: string;
  readonly node: HTMLDivElement;

  /** Tint tokens by latency (setting `tinting`). Applies to tokens rendered from now on. */
  set tinting(on: boolean) {
    this._tinting = on;
  }

  /** Colour the tokens by probability (true) or by latency (false): the card's toggle. */
  get probability(): boolean {
    return this._probability;
  }

  set probability(on: boolean) {
    this._probability = on;
    setAttr(this.node, 'data-color', on ? 'probability' : 'latency');
    setAttr(this._probToggle, 'aria-pressed', on ? 'true' : 'false');
    this._legend.hidden = !on;
  }

  /** The token popover (open while a token span is hovered or focused). */
  get popover(): TokenPopover {
    return this._popover;
  }

  /** True while tokens of the last `update` are still waiting for a later frame. */
  get pending(): boolean {
    return this._last !== null && this._renderedAbs < logTotal(this._last.tokens);
  }

  /** Whether the token stream lags the run of the last update: tokens to render, or to prune. */
  get stale(): boolean {
    return this._last !== null && (this.pending || this._prunable(this._last.tokens.dropped));
  }

  /** Whether the token stream's DOM was released (`release`) and not rebuilt since. */
  get released(): boolean {
    return this._renderedAbs === 0 && this._domChunks.length === 0;
  }

  /**
   * Bring the card up to date with `run`: the header, then the token stream within `budget`
   * (default: one frame's spans). While `pending`, call again (next frame) with the same run.
   */
  update(run: RunState, budget: Budget = frameUnits()): void {
    this.updateHeader(run);
    if (this._renderedAbs > logTotal(run.tokens)) {
      // Cannot happen with the reducer (tokens only grow), but stay correct if it does.
      this.release();
    }
    if (this.stale) {
      this._appendTokens(run, budget);
    }
    this._writeCounts();
  }

  /**
   * The card's status: a shown card still rendering the tokens of a run that ended says
   * 'running' until its text is complete, so its status, count and text always agree.
   */
  private _writeStatus(): void {
    const run = this._last;
    if (run === null) {
      return;
    }
    const status =
      run.status !== 'running' && !this.node.hidden && this.pending ? 'running' : run.status;
    setAttr(this.node, 'data-status', status);
    setText(this._status, statusText(status, this._trans));
    const cls = `aigc-run-status aigc-status-${status}`;
    if (this._status.className !== cls) {
      this._status.className = cls;
    }
  }

  /** `data-token-count` and `data-rendered-count` (see the DOM contract). */
  private _writeCounts(): void {
    const total = this._last === null ? 0 : logTotal(this._last.tokens);
    setAttr(
      this.node,
      'data-token-count',
      String(this.node.hidden ? total : Math.min(total, this._renderedAbs))
    );
    setAttr(this.node, 'data-rendered-count', String(this._renderedAbs));
    this._writeStatus();
  }

  /**
   * Drop the token stream's DOM (the card is hidden): it is rebuilt from the store, within the
   * frame budget, the next time the card is rendered.
   */
  release(): void {
    this._popover.hide();
    if (this.released) {
      return;
    }
    this._textBox.replaceChildren();
    this._textNode = document.createTextNode('');
    this._chunk = null;
    this._chunkTokens = 0;
    this._domChunks = [];
    this._plain = false;
    this._renderedAbs = 0;
    this._tabStop = null;
    this._writeCounts();
  }

  /** The cheap part of `update`: attributes, header, metrics, training summary (no token DOM). */
  updateHeader(run: RunState): void {
    if (this.node.hidden) {
      this._popover.hide(); // the panel hid this card: no popover left floating over another
    }
    if (run === this._last) {
      this._writeCounts(); // the card may have been shown or hidden since
      return;
    }
    const previous = this._last;
    this._last = run;
    const n = this.node;
    this._writeCounts();

    setAttr(n, 'data-kind', run.kind);
    this._writeStatus();
    setAttr(n, 'data-elided', String(run.tokens.dropped));
    setAttr(n, 'data-dups', String(run.dups));
    setAttr(n, 'data-gaps', String(run.gaps));
    setAttr(n, 'data-t0', run.t0 === null ? '' : String(run.t0));
    setAttr(n, 'data-logprobs', run.logprobs ? 'true' : 'false');
    this._tools.hidden = run.kind !== 'generate' && !run.logprobs;
    this._probToggle.hidden = !run.logprobs;
    const lastStep = logLast(run.steps);
    setAttr(n, 'data-step-count', String(run.steps.length));
    setAttr(n, 'data-last-step', String(lastStep !== undefined ? lastStep.step : 0));

    this._elided.hidden = run.tokens.dropped === 0;
    setText(
      this._elided,
      run.tokens.dropped === 0
        ? ''
        : chartText(this._trans).elided(run.tokens.dropped, run.tokens.length)
    );

    const trans = this._trans;
    setText(this._kind, kindText(run.kind, trans));
    const m = run.model;
    setText(this._model, m === null ? trans.__('(model unknown)') : m.name);
    // How it ran (the stepper registry, infer/backends.py): e.g. "fused-gpt2 · kernel layers".
    const stepper = run.config['stepper'];
    const layers = run.config['layers'];
    setText(
      this._stepper,
      typeof stepper === 'string'
        ? typeof layers === 'string'
          ? trans.__('%1 · %2 layers', stepper, layers)
          : stepper
        : ''
    );
    this._stepper.hidden = typeof stepper !== 'string';
    if (previous === null || previous.config !== run.config) {
      this._updateChat(run.config);
    }
    this._updateMetrics(run);

    const extra: string[] = [];
    if (run.metrics !== null && run.metrics.peak_mem_mb !== null) {
      extra.push(trans.__('peak %1 MB', Math.round(run.metrics.peak_mem_mb)));
    }
    if (run.dups > 0) {
      extra.push(trans._n('%1 duplicate ignored', '%1 duplicates ignored', run.dups));
    }
    if (run.gaps > 0) {
      extra.push(trans._n('%1 gap (tokens lost)', '%1 gaps (tokens lost)', run.gaps));
    }
    const accepted = run.metrics?.draft_acceptance;
    const perStep = run.metrics?.tokens_per_step;
    if (typeof accepted === 'number') {
      extra.push(trans.__('draft accepted %1%', Math.round(accepted * 100)));
    }
    if (typeof perStep === 'number') {
      extra.push(trans.__('%1 tokens per target forward', perStep.toFixed(1)));
    }
    setText(this._extra, extra.join(' · '));

    this._error.hidden = run.error === null;
    setText(this._error, run.error ?? '');

    // The button is there while the run runs; the fate of a cancel request stays readable in
    // .aigc-cancel-state after the run ended.
    this._cancel.hidden = run.status !== 'running';
    setText(this._cancel, run.cancel === null ? trans.__('Stop') : cancelLabel(run, trans));
    // Disabled only while a cancel is on its way or accepted; refused or failed: try again.
    const stuck =
      run.cancel !== null && (run.cancel.state === 'refused' || run.cancel.state === 'failed');
    this._cancel.disabled = run.cancel !== null && !stuck;
    this._interrupt.hidden = !(stuck && run.status === 'running');
    setAttr(this._cancel, 'data-cancel-state', run.cancel?.state ?? '');
    setText(this._cancelState, run.cancel === null ? '' : cancelLabel(run, trans));
    setAttr(this._cancelState, 'data-cancel-state', run.cancel?.state ?? '');

    this._updateTrain(run, previous);
  }

  /** Whether the first DOM chunk holds only tokens the store dropped (before `dropped`). */
  private _prunable(dropped: number): boolean {
    return this._domChunks.length > 0 && this._domChunks[0].end <= dropped;
  }

  /** Remove the DOM chunks whose tokens the store no longer keeps (all before `dropped`). */
  private _prune(dropped: number): void {
    let k = 0;
    while (k < this._domChunks.length && this._domChunks[k].end <= dropped) {
      const chunk = this._domChunks[k].node;
      chunk.remove();
      if (chunk === this._chunk) {
        this._chunk = null;
        this._chunkTokens = 0;
      }
      if (this._tabStop !== null && chunk.contains(this._tabStop)) {
        this._tabStop = this._textBox.querySelector<HTMLElement>('.aigc-tok-lp');
        if (this._tabStop !== null) {
          this._tabStop.tabIndex = 0;
        }
      }
      k++;
    }
    if (k > 0) {
      this._domChunks = this._domChunks.slice(k);
    }
  }

  private _appendTokens(run: RunState, budget: Budget): void {
    const log = run.tokens;
    // Whether to follow the stream: kept by the scroll listener, not read here (a layout read
    // between this frame's DOM writes would force a layout of its own).
    const atBottom = this._follow;
    this._prune(log.dropped);
    if (this._renderedAbs < log.dropped) {
      this._renderedAbs = log.dropped; // dropped by the cap before this card rendered them
    }
    const n = log.length;
    let k = this._renderedAbs - log.dropped;
    // Spans for tinting, and for inspection when the run has logprobs (even with tinting off).
    const spanned =
      (this._tinting || run.logprobs) && !this._plain && this._renderedAbs < TINT_MAX_TOKENS;
    if (spanned) {
      if (this._tinting) {
        this._refreshTintRef(run);
      }
      const end = Math.min(n, TINT_MAX_TOKENS - log.dropped, k + Math.max(0, budget.units));
      let made = 0;
      while (k < end) {
        this._chunkFor(log, k, budget).appendChild(this._tokenSpan(log, k));
        k++;
        made++;
        // The time budget is checked every 32 spans (reading the clock costs too).
        if ((made & 31) === 0 && budget.exhausted) {
          break;
        }
      }
      budget.take(made);
    }
    if (k < n && (!spanned || k + log.dropped >= TINT_MAX_TOKENS)) {
      // Untinted tokens go into one Text node per chunk: cheap, so no per-frame budget here.
      this._plain = true;
      let text = '';
      for (; k < n; k++) {
        const chunk = this._chunkFor(log, k, budget);
        if (chunk !== this._textNode.parentNode) {
          this._textNode.appendData(text);
          text = '';
          this._textNode = document.createTextNode('');
          chunk.appendChild(this._textNode);
        }
        text += logAt(log, k).text;
      }
      this._textNode.appendData(text);
    }
    this._renderedAbs = log.dropped + k;
    if (atBottom && !this._scrollQueued) {
      // Follow the stream at the end of the frame, after every DOM write (one layout).
      this._scrollQueued = true;
      budget.defer(this._scrollToEnd);
    }
  }

  /** Scroll the token stream to its end; never smoothly when the user asked for reduced motion. */
  private _scrollToEnd = (): void => {
    this._scrollQueued = false;
    const box = this._textBox;
    if (!box.isConnected) {
      return;
    }
    if (typeof box.scrollTo === 'function') {
      box.scrollTo({
        top: box.scrollHeight,
        behavior: prefersReducedMotion() ? 'instant' : 'auto'
      });
    } else {
      box.scrollTop = box.scrollHeight;
    }
    this._follow = true;
  };

  /** Reference latency for the tint: the median of the recent inter-token latencies (4 Hz). */
  private _refreshTintRef(run: RunState): void {
    const now = performance.now();
    if (this._tintRef === null || now - this._tintRefAt > 250) {
      this._tintRef = percentile(recentLatencies(run, 256), 0.5);
      this._tintRefAt = now;
    }
  }

  /**
   * The span of token `k`: latency tint (with tinting on), and with logprobs the probability class
   * and the roving tabindex (the first such span is the tab stop until another is focused).
   */
  private _tokenSpan(tokens: ChunkLog<TokenItem>, k: number): HTMLSpanElement {
    const item = logAt(tokens, k);
    const first = tokens.dropped + k === 0;
    const latency = first ? item.ms : k === 0 ? 0 : Math.max(0, item.ms - logAt(tokens, k - 1).ms);
    const span = document.createElement('span');
    let cls = 'aigc-tok';
    if (this._tinting) {
      cls += first ? ' aigc-tok-first' : ` aigc-tint-${tintLevel(latency, this._tintRef)}`;
    }
    if (item.draft === true) {
      cls += ' aigc-tok-draft';
    }
    if (item.logprob !== undefined) {
      cls += ` aigc-tok-lp aigc-prob-${probLevel(item.logprob)}`;
      span.tabIndex = this._tabStop === null ? 0 : -1;
      this._tabStop = this._tabStop ?? span;
    } else {
      span.title = tokenTitle(item, latency, first, this._trans);
    }
    span.className = cls;
    span.setAttribute('data-i', String(item.i));
    span.textContent = item.text;
    return span;
  }

  /** The probability legend: one swatch per level, shown while colouring by probability. */
  private _buildLegend(): HTMLSpanElement {
    const legend = el('span', 'aigc-prob-legend', this._tools);
    legend.setAttribute('role', 'group');
    legend.setAttribute('aria-label', this._trans.__('Token probability levels'));
    el('span', 'aigc-prob-legend-label', legend).textContent = this._trans.__('p:');
    probLegend().forEach((label, level) => {
      el('span', `aigc-prob-key aigc-prob-${level}`, legend).textContent = label;
    });
    return legend;
  }

  /** Hover, focus and keys on the token stream (delegated: no listener per span). */
  private _listenForInspection(): void {
    const box = this._textBox;
    box.addEventListener('mouseover', ev => {
      const span = inspectable(ev.target);
      if (span !== null) {
        this._inspect(span);
      }
    });
    box.addEventListener('mouseout', ev => this._leave(ev.relatedTarget));
    this._popover.node.addEventListener('mouseleave', ev => this._leave(ev.relatedTarget));
    box.addEventListener('focusin', ev => {
      const span = inspectable(ev.target);
      if (span !== null) {
        this._moveTabStop(span);
        this._inspect(span);
      }
    });
    box.addEventListener('focusout', () => this._popover.hide());
    box.addEventListener('keydown', ev => this._onTokenKey(ev));
  }

  /** Open the popover on `span`'s token. */
  private _inspect(span: HTMLElement): void {
    if (this._last === null) {
      return;
    }
    const tokens = this._last.tokens;
    const k = findToken(tokens, Number(span.getAttribute('data-i')));
    if (k < 0) {
      return;
    }
    const item = logAt(tokens, k);
    const first = tokens.dropped + k === 0;
    const latency = first ? item.ms : k === 0 ? 0 : Math.max(0, item.ms - logAt(tokens, k - 1).ms);
    this._popover.show(span, item, tokenTitle(item, latency, first, this._trans));
  }

  /**
   * The pointer left a token or the popover (towards `to`): keep the popover while the pointer is
   * on either, else go back to the focused token's popover, or close.
   */
  private _leave(to: EventTarget | null): void {
    const pop = this._popover;
    const onPopover = to instanceof Node && pop.node.contains(to);
    const onAnchor = to instanceof Node && pop.anchor !== null && pop.anchor.contains(to);
    if (onPopover || onAnchor) {
      return;
    }
    const focused = inspectable(document.activeElement);
    if (focused !== null && this._textBox.contains(focused)) {
      this._inspect(focused);
    } else {
      pop.hide();
    }
  }

  /** Roving tabindex: the focused token becomes the stream's one tab stop. */
  private _moveTabStop(span: HTMLElement): void {
    if (this._tabStop !== span) {
      if (this._tabStop !== null) {
        this._tabStop.tabIndex = -1;
      }
      span.tabIndex = 0;
      this._tabStop = span;
    }
  }

  /** Arrow keys, Home and End move between the inspectable tokens. */
  private _onTokenKey(ev: KeyboardEvent): void {
    const span = inspectable(ev.target);
    if (span === null) {
      return;
    }
    let to: HTMLElement | null = null;
    if (ev.key === 'ArrowRight' || ev.key === 'ArrowDown') {
      to = neighbour(span, 1);
    } else if (ev.key === 'ArrowLeft' || ev.key === 'ArrowUp') {
      to = neighbour(span, -1);
    } else if (ev.key === 'Home') {
      to = this._textBox.querySelector<HTMLElement>('.aigc-tok-lp');
    } else if (ev.key === 'End') {
      const all = this._textBox.querySelectorAll<HTMLElement>('.aigc-tok-lp');
      to = all.length > 0 ? all[all.length - 1] : null;
    }
    if (to !== null) {
      ev.preventDefault();
      to.focus();
    }
  }

  /**
   * The chunk (a block in the text box) that token `k` goes into, starting a new one when due.
   * The browser lays out a paragraph anew whenever text is appended to it, so one growing block
   * costs O(tokens) per frame; closed chunks are laid out once. A new chunk starts after a token
   * that ends a line (invisible: a block's final newline adds no empty line) once the chunk holds
   * `CHUNK_SOFT_TOKENS`, and after `CHUNK_MAX_TOKENS` in any case (a paragraph that long without
   * a newline then wraps at the boundary; the text itself is unchanged).
   */
  private _chunkFor(tokens: ChunkLog<TokenItem>, k: number, budget: Budget): HTMLDivElement {
    const n = this._chunkTokens;
    const lineEnded = k > 0 && logAt(tokens, k - 1).text.endsWith('\n');
    const abs = tokens.dropped + k;
    if (this._chunk === null || n >= CHUNK_MAX_TOKENS || (n >= CHUNK_SOFT_TOKENS && lineEnded)) {
      if (this._chunk !== null) {
        const closed = this._chunk;
        budget.defer(() => closeChunk(closed));
      }
      this._chunk = el('div', 'aigc-chunk', this._textBox);
      this._chunkTokens = 0;
      this._domChunks.push({ node: this._chunk, start: abs, end: abs });
    }
    this._chunkTokens++;
    this._domChunks[this._domChunks.length - 1].end = abs + 1;
    return this._chunk;
  }

  /** The chat section: built hidden, filled by `_updateChat` for a chat run. */
  private _buildChat(): ChatView {
    const trans = this._trans;
    const node = el('section', 'aigc-chat', this.node);
    node.hidden = true;
    const head = el('div', 'aigc-chat-head', node);
    const title = el('span', 'aigc-chat-title', head);
    title.id = `${this._replyLabelBase()}-chat-title`;
    title.textContent = trans.__('Conversation');
    node.setAttribute('aria-labelledby', title.id);
    const template = el('span', 'aigc-chat-template', head);
    template.title = trans.__('The chat template that rendered these turns into the prompt');
    const earlier = el('div', 'aigc-chat-earlier', node);
    earlier.hidden = true;
    const note = el('span', 'aigc-chat-earlier-note', earlier);
    const expand = el('button', 'aigc-chat-expand jp-mod-styled', earlier);
    expand.type = 'button';
    const list = el('ol', 'aigc-chat-turns', node);
    list.id = `${this._replyLabelBase()}-chat-turns`;
    list.setAttribute('aria-label', trans.__('Conversation turns'));
    expand.setAttribute('aria-controls', list.id);
    expand.addEventListener('click', () => {
      this._chatExpanded = !this._chatExpanded;
      this._renderTurns();
    });
    return { node, template, earlier, note, expand, list };
  }

  /** A prefix for ids unique to this card. */
  private _replyLabelBase(): string {
    if (this._idBase === '') {
      this._idBase = `aigc-run-${++replyLabelCount}`;
    }
    return this._idBase;
  }

  /** Show the conversation of a chat run (`config.chat`), or nothing for any other run. */
  private _updateChat(config: JSONObject): void {
    const chat = chatOf(config);
    this._chatConfig = chat;
    const c = this._chat;
    c.node.hidden = chat === null;
    this._replyRole.hidden = chat === null;
    if (chat === null) {
      c.list.replaceChildren();
      this._textBox.removeAttribute('role');
      this._textBox.removeAttribute('aria-labelledby');
      this._textBox.removeAttribute('data-role');
      return;
    }
    setAttr(c.node, 'data-template', chat.template);
    setAttr(c.node, 'data-turn-count', String(chat.messages.length));
    setText(c.template, this._trans.__('template: %1', chat.template));
    setAttr(this._textBox, 'role', 'group');
    setAttr(this._textBox, 'aria-labelledby', this._replyRole.id);
    setAttr(this._textBox, 'data-role', 'assistant');
    this._renderTurns();
  }

  /** The turns shown: the last `CHAT_VISIBLE_TURNS`, or all of them once expanded. */
  private _renderTurns(): void {
    const chat = this._chatConfig;
    if (chat === null) {
      return;
    }
    const trans = this._trans;
    const c = this._chat;
    const n = chat.messages.length;
    const hidden = this._chatExpanded ? 0 : Math.max(0, n - CHAT_VISIBLE_TURNS);
    const items: HTMLLIElement[] = [];
    for (let k = hidden; k < n; k++) {
      const turn = chat.messages[k];
      const li = document.createElement('li');
      li.className = 'aigc-chat-turn';
      li.setAttribute('data-role', turn.role);
      li.setAttribute('data-turn', String(k));
      li.setAttribute('aria-posinset', String(k + 1));
      li.setAttribute('aria-setsize', String(n));
      el('span', 'aigc-chat-role', li).textContent = roleText(turn.role, trans);
      el('div', 'aigc-chat-content', li).textContent = turn.content;
      items.push(li);
    }
    c.list.replaceChildren(...items);
    setAttr(c.node, 'data-shown-turns', String(items.length));
    const more = n > CHAT_VISIBLE_TURNS;
    c.earlier.hidden = !more;
    const earlier = n - CHAT_VISIBLE_TURNS;
    setText(
      c.note,
      !more
        ? ''
        : this._chatExpanded
          ? trans._n('showing all %1 turn', 'showing all %1 turns', n)
          : trans._n('%1 earlier turn not shown', '%1 earlier turns not shown', earlier)
    );
    setText(
      c.expand,
      this._chatExpanded
        ? trans.__('Show the last %1 only', CHAT_VISIBLE_TURNS)
        : trans._n('Show %1 earlier turn', 'Show %1 earlier turns', earlier)
    );
    setAttr(c.expand, 'aria-expanded', this._chatExpanded ? 'true' : 'false');
  }

  private _updateMetrics(run: RunState): void {
    const trans = this._trans;
    const m = run.model;
    const set = (key: string, text: string, title = '') => {
      const metric = this._metrics.get(key);
      if (metric !== undefined) {
        setText(metric.value, text);
        if (metric.node.title !== title) {
          metric.node.title = title;
        }
      }
    };
    set(
      'model',
      m === null
        ? '–'
        : [m.name, formatParams(m.params), m.dtype, m.quant ?? trans.__('no quant'), m.device].join(
            ' · '
          ),
      m === null ? '' : trans.__('name · parameters · dtype · quantization · device')
    );
    const ttft = timeToFirstToken(run);
    set('ttft', formatMs(ttft, trans));
    set('toks', rateValue(tokensPerSecond(run)));
    let p50: number | null = null;
    let p95: number | null = null;
    const ended = run.status !== 'running';
    if (ended && run.metrics !== null && run.metrics.itl_p50_ms !== null) {
      p50 = run.metrics.itl_p50_ms;
      p95 = run.metrics.itl_p95_ms;
    } else if (run.tokens.length > 1 && !this.node.hidden) {
      // Live figures over the recent tokens, refreshed at most 4 times a second.
      const now = performance.now();
      if (this._live === null || ended || now - this._liveAt > 250) {
        const itl = recentLatencies(run);
        this._live = [percentile(itl, 0.5), percentile(itl, 0.95)];
        this._liveAt = now;
      }
      [p50, p95] = this._live;
    }
    set('p50', formatMs(p50, trans));
    set('p95', formatMs(p95, trans));
    const total = logTotal(run.tokens);
    const count = run.metrics !== null ? Math.max(run.metrics.tokens, total) : total;
    set('tokens', String(count));
    set('status', statusText(run.status, trans));
  }

  private _updateTrain(run: RunState, previous: RunState | null): void {
    const hasTrain = run.steps.length > 0 || run.evals.length > 0 || run.checkpoints.length > 0;
    this._train.hidden = !hasTrain;
    if (
      !hasTrain ||
      (previous !== null &&
        previous.steps === run.steps &&
        previous.evals === run.evals &&
        previous.checkpoints === run.checkpoints)
    ) {
      return;
    }
    const trans = this._trans;
    const parts: string[] = [];
    const last = logLast(run.steps);
    if (last !== undefined) {
      parts.push(
        trans.__('step %1', last.step),
        trans.__('loss %1', last.loss.toFixed(4)),
        trans.__('lr %1', last.lr.toExponential(2))
      );
      if (last.tok_s !== null) {
        parts.push(formatRate(last.tok_s, trans));
      }
    }
    const ev = run.evals[run.evals.length - 1];
    if (ev !== undefined) {
      parts.push(trans.__('val_loss %1', ev.val_loss.toFixed(4)));
      if (ev.ppl !== null) {
        parts.push(trans.__('ppl %1', ev.ppl.toFixed(2)));
      }
      // The generative eval metrics of the last eval (exact match, chrF, BLEU...), by their names.
      for (const name of Object.keys(ev.metrics)) {
        parts.push(`${name} ${num(ev.metrics[name])}`);
      }
    }
    const ck = run.checkpoints[run.checkpoints.length - 1];
    if (ck !== undefined) {
      parts.push(trans.__('checkpoint @%1', ck.step));
    }
    setText(this._trainText, parts.join(' · '));
  }

  private _chat: ChatView;
  private _chatConfig: ChatConfig | null = null;
  private _chatExpanded = false;
  private _replyRole: HTMLDivElement;
  private _idBase = '';
  private _last: RunState | null = null;
  /** Tokens (since the run's start) rendered or skipped as elided: the next one to render. */
  private _renderedAbs = 0;
  /** The token stream's DOM chunks, oldest first, with the tokens each holds ([start, end)). */
  private _domChunks: { node: HTMLDivElement; start: number; end: number }[] = [];
  private _elided: HTMLDivElement;
  private _tinting = true;
  private _tintRef: number | null = null;
  private _tintRefAt = 0;
  private _live: [number | null, number | null] | null = null;
  private _liveAt = 0;
  private _metrics = new Map<string, Metric>();
  private _kind: HTMLSpanElement;
  private _model: HTMLSpanElement;
  private _stepper: HTMLSpanElement;
  private _status: HTMLSpanElement;
  private _cancel: HTMLButtonElement;
  private _interrupt: HTMLButtonElement;
  private _cancelState: HTMLSpanElement;
  private _extra: HTMLDivElement;
  private _error: HTMLDivElement;
  private _train: HTMLDivElement;
  private _trainText: HTMLDivElement;
  private _textBox: HTMLDivElement;
  /** Whether the token stream follows its end (the user has not scrolled up). */
  private _follow = true;
  /** A scroll to the end waits for the end of the frame. */
  private _scrollQueued = false;
  /** The Text node untinted tokens are appended to (inside the current chunk once used). */
  private _textNode: Text;
  private _chunk: HTMLDivElement | null = null;
  private _chunkTokens = 0;
  /** Set once tokens went in as plain text: later tokens stay plain, in order. */
  private _plain = false;
  private _tools: HTMLDivElement;
  private _probToggle: HTMLButtonElement;
  private _legend: HTMLSpanElement;
  private _probability = false;
  private _popover: TokenPopover;
  private _trans: TranslationBundle;
  /** The token span that Tab reaches (roving tabindex), or null before the first one. */
  private _tabStop: HTMLElement | null = null;
}
