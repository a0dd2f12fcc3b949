// @vitest-environment jsdom
import { Kernel } from '@jupyterlab/services';
import { Widget } from '@lumino/widgets';
import { afterEach, describe, expect, it } from 'vitest';

import { KernelChannel } from '../channel';
import { AigcLabPanel } from '../panel';
import { TokenItem } from '../protocol';
import { appendLog, emptyLog, logToArray } from '../chunklog';
import { Action, RunState, initialState, reduce, reduceAll, runList, runText } from '../store';
import {
  cancelLabel,
  formatMs,
  formatParams,
  formatProb,
  formatRate,
  visiblePiece
} from '../views/format';
import { HistoryTable } from '../views/history';
import {
  CHUNK_MAX_TOKENS,
  CHUNK_SOFT_TOKENS,
  RunView,
  SPANS_PER_FRAME,
  TINT_MAX_TOKENS,
  findToken,
  tokenTitle,
  tokensCsvName
} from '../views/runview';
import { fakeKernel, frame } from './fakekernel';
import { fixtureAction } from './fixtures';

const fx = fixtureAction;

function tokens(run: string, from: number, pieces: string[]): Action {
  const items: TokenItem[] = pieces.map((text, k) => ({ i: from + k, id: null, text, ms: 10 + k }));
  return { type: 'message', message: { v: 1, type: 'tokens', run, items } };
}

/** A state that keeps every token (no per-run cap), for tests of the DOM layout of long runs. */
function uncapped(): ReturnType<typeof initialState> {
  return reduce(initialState(), { type: 'limits', maxRuns: 100, maxTokens: 1e9 });
}

describe('RunView', () => {
  it('renders the DOM contract and appends text incrementally', () => {
    const view = new RunView('gen-7f3a', () => undefined);
    let s = reduceAll(initialState(), [fx('run_start_generate.json'), fx('tokens.json')]);
    view.update(s.runs['gen-7f3a']);
    const n = view.node;
    expect(n.classList.contains('aigc-run')).toBe(true);
    expect(n.getAttribute('data-run-id')).toBe('gen-7f3a');
    expect(n.getAttribute('data-kind')).toBe('generate');
    expect(n.getAttribute('data-status')).toBe('running');
    expect(n.getAttribute('data-token-count')).toBe('3');
    expect(n.getAttribute('data-dups')).toBe('0');
    expect(n.getAttribute('data-gaps')).toBe('0');
    const text = n.querySelector('.aigc-run-text') as HTMLElement;
    const firstSpan = text.firstChild;
    expect(text.textContent).toBe('Once upon a ✓');
    // Tinted tokens: one span per token, tooltip with index, id, piece and ms.
    const spans = text.querySelectorAll('span.aigc-tok');
    expect(spans.length).toBe(3);
    expect(spans[0].classList.contains('aigc-tok-first')).toBe(true);
    expect((spans[0] as HTMLElement).title).toMatch(/^#0 · id \d+ · "Once" · TTFT [\d.]+ ms$/);
    expect(spans[1].className).toMatch(/aigc-tint-[0-4]/);
    const cancel = n.querySelector('button.aigc-cancel') as HTMLButtonElement;
    expect(cancel.hidden).toBe(false);
    expect(n.querySelector('.aigc-run-header')?.textContent).toContain('starter:gpt-tiny');

    s = reduceAll(s, [
      tokens('gen-7f3a', 3, ['\n  two spaces', '\ttab ']),
      tokens('gen-7f3a', 0, ['dup']),
      fx('run_end_ok.json')
    ]);
    view.update(s.runs['gen-7f3a']);
    expect(text.textContent).toBe('Once upon a ✓\n  two spaces\ttab ');
    expect(text.firstChild).toBe(firstSpan); // appended in place, not rebuilt
    expect(text.querySelectorAll('span.aigc-tok').length).toBe(5);
    expect(n.getAttribute('data-token-count')).toBe('5');
    expect(n.getAttribute('data-dups')).toBe('1');
    expect(n.getAttribute('data-status')).toBe('ok');
    expect(cancel.hidden).toBe(true);
    const metric = (k: string) =>
      n.querySelector(`.aigc-metric[data-metric="${k}"] .aigc-metric-value`)?.textContent;
    expect(metric('toks')).toBe('180');
    expect(metric('ttft')).toBe('12.5 ms');
    expect(metric('p50')).toBe('4.4 ms');
    expect(metric('p95')).toBe('6.1 ms');
    expect(metric('tokens')).toBe('64');
    expect(metric('status')).toBe('ok');
    expect(metric('model')).toBe('starter:gpt-tiny · 5.5M · float32 · no quant · cpu');
  });

  it('shows the cancel state on its button', () => {
    const clicks: string[] = [];
    const view = new RunView('gen-7f3a', id => clicks.push(id));
    let s = reduce(initialState(), fx('run_start_generate.json'));
    view.update(s.runs['gen-7f3a']);
    const cancel = view.node.querySelector('button.aigc-cancel') as HTMLButtonElement;
    cancel.click();
    expect(clicks).toEqual(['gen-7f3a']);
    s = reduce(s, { type: 'cancel.requested', run: 'gen-7f3a', id: 'req-3' });
    view.update(s.runs['gen-7f3a']);
    expect(cancel.textContent).toBe('cancelling…');
    expect(cancel.disabled).toBe(true);
    s = reduce(s, fx('ack.json'));
    view.update(s.runs['gen-7f3a']);
    expect(cancel.textContent).toBe('cancel acknowledged');
    expect(cancel.hidden).toBe(false);
    s = reduce(s, fx('run_end_cancelled.json'));
    view.update(s.runs['gen-7f3a']);
    expect(view.node.getAttribute('data-status')).toBe('cancelled');
    expect(cancel.hidden).toBe(true); // no cancel button once the run ended
    expect(view.node.querySelector('.aigc-cancel-state')?.textContent).toBe('cancel acknowledged');
  });

  it('a refused or unanswered cancel re-enables Stop and offers to interrupt the kernel', () => {
    const interrupts: string[] = [];
    const view = new RunView(
      'gen-7f3a',
      () => undefined,
      id => interrupts.push(id)
    );
    let s = reduce(initialState(), fx('run_start_generate.json'));
    s = reduce(s, { type: 'cancel.requested', run: 'gen-7f3a', id: 'req-1' });
    view.update(s.runs['gen-7f3a']);
    const cancel = view.node.querySelector('button.aigc-cancel') as HTMLButtonElement;
    const interrupt = view.node.querySelector('button.aigc-interrupt') as HTMLButtonElement;
    expect(cancel.disabled).toBe(true);
    expect(interrupt.hidden).toBe(true);
    s = reduce(s, {
      type: 'message',
      message: { v: 1, type: 'ack', run: 'gen-7f3a', id: 'req-1', ok: false, error: 'not running' }
    });
    view.update(s.runs['gen-7f3a']);
    expect(cancel.disabled).toBe(false);
    expect(interrupt.hidden).toBe(false);
    interrupt.click();
    expect(interrupts).toEqual(['gen-7f3a']);
    s = reduce(s, { type: 'cancel.requested', run: 'gen-7f3a', id: 'req-2' });
    s = reduce(s, { type: 'cancel.failed', run: 'gen-7f3a', id: 'req-2', error: 'no answer' });
    view.update(s.runs['gen-7f3a']);
    expect(cancel.disabled).toBe(false);
    expect(interrupt.hidden).toBe(false);
    s = reduce(s, fx('run_end_cancelled.json'));
    view.update(s.runs['gen-7f3a']);
    expect(interrupt.hidden).toBe(true);
  });

  it('renders 5000 tokens with tinting off as one text node per chunk', () => {
    const view = new RunView('r', () => undefined);
    view.tinting = false;
    let s = uncapped();
    for (let i = 0; i < 5000; i += 50) {
      s = reduce(
        s,
        tokens(
          'r',
          i,
          Array.from({ length: 50 }, (_, k) => `${i + k} `)
        )
      );
      view.update(s.runs['r']);
    }
    const text = view.node.querySelector('.aigc-run-text') as HTMLElement;
    const chunks = Array.from(text.children);
    expect(chunks.length).toBe(Math.ceil(5000 / CHUNK_MAX_TOKENS)); // no newline: hard limit
    for (const c of chunks) {
      expect(c.className).toBe('aigc-chunk');
      expect(c.childNodes.length).toBe(1);
      expect(c.firstChild?.nodeType).toBe(Node.TEXT_NODE);
    }
    expect(text.querySelectorAll('span').length).toBe(0);
    expect(text.textContent).toBe(runText(s.runs['r']));
    expect(view.node.getAttribute('data-token-count')).toBe('5000');
  });

  it('spreads a burst of tinted tokens over several updates, SPANS_PER_FRAME at a time', () => {
    const view = new RunView('r', () => undefined);
    const n = 3 * SPANS_PER_FRAME + 10;
    const s = reduce(
      initialState(),
      tokens(
        'r',
        0,
        Array.from({ length: n }, (_, k) => `${k} `)
      )
    );
    const run = s.runs['r'];
    const text = view.node.querySelector('.aigc-run-text') as HTMLElement;
    view.update(run);
    expect(text.querySelectorAll('span.aigc-tok').length).toBe(SPANS_PER_FRAME);
    // A shown card counts what it shows, so the count and the text agree.
    expect(view.node.getAttribute('data-token-count')).toBe(String(SPANS_PER_FRAME));
    expect(view.node.getAttribute('data-rendered-count')).toBe(String(SPANS_PER_FRAME));
    expect(view.pending).toBe(true);
    let updates = 1;
    while (view.pending) {
      view.update(run); // same state object: the view continues where it stopped
      updates++;
      expect(updates).toBeLessThan(10);
    }
    expect(updates).toBe(4);
    expect(text.querySelectorAll('span.aigc-tok').length).toBe(n);
    expect(text.textContent).toBe(runText(run));
    expect(view.node.getAttribute('data-rendered-count')).toBe(String(n));
    view.update(run);
    expect(text.querySelectorAll('span.aigc-tok').length).toBe(n); // nothing appended twice
  });

  it('a shown card says the run ended only once its text is complete', () => {
    const view = new RunView('gen-7f3a', () => undefined);
    const n = SPANS_PER_FRAME + 10;
    const s = reduceAll(initialState(), [
      fx('run_start_generate.json'),
      tokens(
        'gen-7f3a',
        0,
        Array.from({ length: n }, (_, k) => `${k} `)
      ),
      fx('run_end_ok.json')
    ]);
    const run = s.runs['gen-7f3a'];
    view.update(run);
    expect(view.pending).toBe(true);
    expect(view.node.getAttribute('data-status')).toBe('running');
    view.update(run);
    expect(view.pending).toBe(false);
    expect(view.node.getAttribute('data-status')).toBe('ok');
    expect(view.node.getAttribute('data-token-count')).toBe(String(n));
    // A hidden card renders nothing and says at once what the run is.
    const hidden = new RunView('gen-7f3a', () => undefined);
    hidden.node.hidden = true;
    hidden.updateHeader(run);
    expect(hidden.node.getAttribute('data-status')).toBe('ok');
    expect(hidden.node.getAttribute('data-token-count')).toBe(String(n));
  });

  it('caps tinted spans and appends the rest as text', () => {
    const view = new RunView('r', () => undefined);
    let s = uncapped();
    const n = TINT_MAX_TOKENS + 700;
    for (let i = 0; i < n; i += 100) {
      s = reduce(
        s,
        tokens(
          'r',
          i,
          Array.from({ length: 100 }, (_, k) => `${i + k} `)
        )
      );
      view.update(s.runs['r']);
    }
    const text = view.node.querySelector('.aigc-run-text') as HTMLElement;
    expect(text.querySelectorAll('span.aigc-tok').length).toBe(TINT_MAX_TOKENS);
    // The untinted rest is plain text after the last span, in chunks.
    const last = text.lastElementChild as HTMLElement;
    expect(last.lastChild?.nodeType).toBe(Node.TEXT_NODE);
    const plain = Array.from(text.querySelectorAll('.aigc-chunk'))
      .flatMap(c => Array.from(c.childNodes))
      .filter(c => c.nodeType === Node.TEXT_NODE)
      .map(c => c.textContent)
      .join('');
    expect(plain).toBe(
      logToArray(s.runs['r'].tokens)
        .slice(TINT_MAX_TOKENS)
        .map(t => t.text)
        .join('')
    );
    expect(text.textContent).toBe(runText(s.runs['r']));
    expect(view.node.getAttribute('data-token-count')).toBe(String(n));
  });

  it('follows the per-run cap: drops the DOM of tokens the store dropped and says so', () => {
    const view = new RunView('r', () => undefined);
    const cap = 1024;
    let s = reduce(initialState(), { type: 'limits', maxRuns: 10, maxTokens: cap });
    const n = 4000;
    for (let i = 0; i < n; i += 100) {
      s = reduce(
        s,
        tokens(
          'r',
          i,
          Array.from({ length: 100 }, (_, k) => `${i + k} `)
        )
      );
      while ((view.update(s.runs['r']), view.stale)) {
        // a frame per budget
      }
    }
    const run = s.runs['r'];
    const text = view.node.querySelector('.aigc-run-text') as HTMLElement;
    const spans = text.querySelectorAll('span.aigc-tok');
    // The DOM holds the kept tokens (plus at most the rest of one DOM chunk), never all of them.
    expect(spans.length).toBeGreaterThanOrEqual(run.tokens.length);
    expect(spans.length).toBeLessThanOrEqual(run.tokens.length + CHUNK_MAX_TOKENS);
    expect(text.textContent?.endsWith(runText(run))).toBe(true);
    expect(view.node.getAttribute('data-token-count')).toBe(String(n));
    expect(view.node.getAttribute('data-elided')).toBe(String(run.tokens.dropped));
    const note = view.node.querySelector('.aigc-run-elided') as HTMLElement;
    expect(note.hidden).toBe(false);
    expect(note.textContent).toContain(run.tokens.dropped.toLocaleString('en'));
    expect(note.textContent).toMatch(/full text is in the kernel/);
    // Released (card hidden) and rebuilt (shown again) from what the store keeps.
    view.release();
    expect(text.childNodes.length).toBe(0);
    while ((view.update(run), view.stale)) {
      // rebuilt over frames
    }
    expect(text.textContent).toBe(runText(run));
  });

  it('lets the browser skip closed chunks off screen, holding their height', () => {
    const view = new RunView('r', () => undefined);
    document.body.appendChild(view.node);
    const height = Object.getOwnPropertyDescriptor(HTMLElement.prototype, 'offsetHeight');
    Object.defineProperty(HTMLElement.prototype, 'offsetHeight', {
      configurable: true,
      get: () => 42
    });
    try {
      const pieces = Array.from({ length: 3 * CHUNK_MAX_TOKENS }, (_, k) => `w${k} `);
      let s = uncapped();
      for (let i = 0; i < pieces.length; i += 100) {
        s = reduce(s, tokens('r', i, pieces.slice(i, i + 100)));
        view.update(s.runs['r']);
      }
      const chunks = Array.from(view.node.querySelectorAll<HTMLElement>('.aigc-chunk'));
      expect(chunks.length).toBe(3);
      for (const c of chunks.slice(0, -1)) {
        expect(c.classList.contains('aigc-chunk-closed')).toBe(true);
        expect(c.style.getPropertyValue('contain-intrinsic-size')).toBe('auto 42px');
      }
      // The growing chunk is laid out as usual.
      expect(chunks[2].classList.contains('aigc-chunk-closed')).toBe(false);
      expect(view.node.querySelector('.aigc-run-text')?.textContent).toBe(pieces.join(''));
    } finally {
      if (height) {
        Object.defineProperty(HTMLElement.prototype, 'offsetHeight', height);
      }
      view.node.remove();
    }
  });

  it('closes a chunk at a line end once it is long enough, and at the hard limit otherwise', () => {
    const view = new RunView('r', () => undefined);
    // A line end every 50 tokens: chunks close at the first line end after CHUNK_SOFT_TOKENS.
    const pieces = Array.from({ length: 1000 }, (_, k) => (k % 50 === 49 ? 'end\n' : `w${k} `));
    let s = initialState();
    for (let i = 0; i < pieces.length; i += 100) {
      s = reduce(s, tokens('r', i, pieces.slice(i, i + 100)));
      view.update(s.runs['r']);
    }
    const text = view.node.querySelector('.aigc-run-text') as HTMLElement;
    const chunks = Array.from(text.children);
    const soft = Math.ceil(CHUNK_SOFT_TOKENS / 50) * 50;
    expect(chunks.length).toBe(Math.ceil(1000 / soft));
    for (const c of chunks.slice(0, -1)) {
      expect(c.querySelectorAll('span.aigc-tok').length).toBe(soft);
      expect(c.textContent?.endsWith('\n')).toBe(true); // invisible boundary: after a line end
    }
    expect(text.textContent).toBe(runText(s.runs['r']));
  });

  it('titles a token with index, id, piece and latency', () => {
    expect(tokenTitle({ i: 3, id: 42, text: ' "hi"\n', ms: 50 }, 7.25, false)).toBe(
      '#3 · id 42 · " \\"hi\\"\\n" · 7.3 ms'
    );
    expect(tokenTitle({ i: 0, id: null, text: 'a', ms: 50 }, 50, true)).toBe(
      '#0 · id – · "a" · TTFT 50.0 ms'
    );
    // The form is filled in one pass: a piece that holds a placeholder stays as it is.
    expect(tokenTitle({ i: 1, id: 7, text: '%4%1', ms: 9, draft: true }, 2, false)).toBe(
      '#1 · id 7 · "%4%1" · 2.0 ms · from the draft'
    );
  });
});

/** Tokens generated with logprobs=k: token k's logprob is log(probs[k]), top = its alternatives. */
function lpTokens(run: string, from: number, probs: number[]): Action {
  const items: TokenItem[] = probs.map((p, k) => ({
    i: from + k,
    id: 100 + from + k,
    text: `w${from + k} `,
    ms: 10 + from + k,
    logprob: Math.log(p),
    top: [
      { id: 100 + from + k, text: `w${from + k} `, logprob: Math.log(p) },
      { id: 1, text: '\n', logprob: Math.log((1 - p) / 2) }
    ]
  }));
  return { type: 'message', message: { v: 1, type: 'tokens', run, items } };
}

describe('token inspector', () => {
  const views: RunView[] = [];
  afterEach(() => {
    for (const v of views.splice(0)) {
      v.popover.hide();
      v.node.remove();
    }
  });

  /** A RunView in the document (so its spans can take focus), brought up to date with `actions`. */
  function shown(
    actions: Action[],
    download?: (name: string, text: string) => void
  ): [RunView, RunState] {
    const run = reduceAll(initialState(), actions).runs['gen-7f3a'];
    const view = new RunView(
      'gen-7f3a',
      () => undefined,
      () => undefined,
      download
    );
    views.push(view);
    document.body.appendChild(view.node);
    view.update(run);
    return [view, run];
  }

  const spans = (v: RunView) =>
    Array.from(v.node.querySelectorAll<HTMLElement>('.aigc-run-text span.aigc-tok'));
  const toggle = (v: RunView) =>
    v.node.querySelector('button.aigc-prob-toggle') as HTMLButtonElement;
  const popover = () => document.querySelector<HTMLElement>('.aigc-tokpop[role="tooltip"]');

  it('offers the Probability toggle only for runs with logprobs, Tokens CSV for every generate run', () => {
    const [plain] = shown([fx('run_start_generate.json'), fx('tokens.json')]);
    expect(plain.node.getAttribute('data-logprobs')).toBe('false');
    expect((plain.node.querySelector('.aigc-tok-tools') as HTMLElement).hidden).toBe(false);
    expect(toggle(plain).hidden).toBe(true);
    expect((plain.node.querySelector('button.aigc-tokens-csv') as HTMLElement).hidden).toBe(false);
    expect(plain.node.querySelectorAll('[tabindex]').length).toBe(0); // nothing to inspect

    const [lp] = shown([fx('run_start_generate.json'), fx('tokens_logprobs.json')]);
    expect(lp.node.getAttribute('data-logprobs')).toBe('true');
    expect(toggle(lp).hidden).toBe(false);
    expect(toggle(lp).textContent).toBe('Probability');
    expect(toggle(lp).getAttribute('aria-pressed')).toBe('false');

    const train = new RunView('train-01', () => undefined);
    train.update(reduce(initialState(), fx('run_start_train.json')).runs['train-01']);
    expect((train.node.querySelector('.aigc-tok-tools') as HTMLElement).hidden).toBe(true);
  });

  it('classes tokens by probability and switches the colouring without rebuilding a node', () => {
    const [view] = shown([fx('run_start_generate.json'), fx('tokens_logprobs.json')]);
    const before = spans(view);
    // logprobs -0.105 (p 0.90), -3.5 (p 0.03), -0.01 (p 0.99); the tail has none.
    expect(before.map(s => (s.className.match(/aigc-prob-\d/) ?? ['-'])[0])).toEqual([
      'aigc-prob-0',
      'aigc-prob-4',
      'aigc-prob-0',
      '-'
    ]);
    expect(before[1].className).toMatch(/aigc-tint-\d/); // the latency tint is kept for switching back
    expect(before[3].title).toMatch(/^#3 · id – /); // the tail keeps its plain tooltip
    expect(before[0].title).toBe(''); // tokens with logprobs have the popover instead
    const legend = view.node.querySelector('.aigc-prob-legend') as HTMLElement;
    expect(view.node.getAttribute('data-color')).toBe('latency');
    expect(legend.hidden).toBe(true);

    toggle(view).click();
    expect(view.probability).toBe(true);
    expect(view.node.getAttribute('data-color')).toBe('probability');
    expect(toggle(view).getAttribute('aria-pressed')).toBe('true');
    expect(legend.hidden).toBe(false);
    expect(Array.from(legend.querySelectorAll('.aigc-prob-key')).map(k => k.className)).toEqual(
      [0, 1, 2, 3, 4].map(n => `aigc-prob-key aigc-prob-${n}`)
    );
    const after = spans(view);
    expect(after.length).toBe(before.length);
    after.forEach((s, k) => expect(s).toBe(before[k])); // the same nodes, not re-rendered
    toggle(view).click();
    expect(view.node.getAttribute('data-color')).toBe('latency');
    expect(toggle(view).getAttribute('aria-pressed')).toBe('false');
    expect(legend.hidden).toBe(true);
  });

  it('makes spans for logprob tokens even with tinting off, within the per-frame budget', () => {
    const view = new RunView('r', () => undefined);
    view.tinting = false;
    const n = SPANS_PER_FRAME + 20;
    const probs = Array.from({ length: n }, () => 0.6);
    const run = reduce(initialState(), lpTokens('r', 0, probs)).runs['r'];
    view.update(run);
    expect(spans(view).length).toBe(SPANS_PER_FRAME);
    expect(view.pending).toBe(true);
    view.update(run);
    expect(spans(view).length).toBe(n);
    const classes = spans(view).map(s => s.className);
    expect(classes.every(c => /aigc-prob-1/.test(c) && !/aigc-tint/.test(c))).toBe(true);
    expect(view.node.querySelector('.aigc-run-text')?.textContent).toBe(runText(run));
  });

  it('opens a tooltip popover with the alternatives on focus, and Escape closes it', () => {
    const [view] = shown([fx('run_start_generate.json'), fx('tokens_logprobs.json')]);
    const upon = spans(view)[1];
    expect(popover()).toBeNull();
    upon.focus();
    const pop = popover() as HTMLElement;
    expect(pop).not.toBeNull();
    expect(upon.getAttribute('aria-describedby')).toBe(pop.id);
    expect(pop.getAttribute('data-i')).toBe('1');
    const head = pop.querySelector('.aigc-tokpop-head')?.textContent;
    expect(head).toMatch(/^#1 · id 2402 · " upon" · 4\.\d ms$/);
    expect(pop.querySelector('.aigc-tokpop-chosen')?.textContent).toBe(
      'chosen ·upon id 2402 · p 3.02%'
    );
    const rows = Array.from(pop.querySelectorAll('tr.aigc-tokpop-alt')).map(r =>
      Array.from(r.querySelectorAll('td')).map(c => c.textContent)
    );
    expect(rows).toEqual([
      ['·a', '257', '81.9%', ''],
      ['·upon', '2402', '3.02%', '✓']
    ]);
    const marked = Array.from(pop.querySelectorAll('tr[data-chosen="true"]'));
    expect(marked.map(r => r.getAttribute('data-id'))).toEqual(['2402']);

    upon.dispatchEvent(new KeyboardEvent('keydown', { key: 'Escape', bubbles: true }));
    expect(popover()).toBeNull();
    expect(upon.hasAttribute('aria-describedby')).toBe(false);
    expect(document.activeElement).toBe(upon); // Escape closes the popover, focus stays
  });

  it('is one tab stop; arrow keys, Home and End move between tokens; blur closes', () => {
    const [view] = shown([fx('run_start_generate.json'), fx('tokens_logprobs.json')]);
    const [once, upon, a, tail] = spans(view);
    expect([once, upon, a].map(s => s.tabIndex)).toEqual([0, -1, -1]);
    expect(tail.hasAttribute('tabindex')).toBe(false);
    once.focus();
    const key = (k: string) =>
      (document.activeElement as HTMLElement).dispatchEvent(
        new KeyboardEvent('keydown', { key: k, bubbles: true, cancelable: true })
      );
    key('ArrowRight');
    expect(document.activeElement).toBe(upon);
    expect([once, upon, a].map(s => s.tabIndex)).toEqual([-1, 0, -1]);
    expect(popover()?.getAttribute('data-i')).toBe('1');
    key('End');
    expect(document.activeElement).toBe(a); // the tail, without logprobs, is skipped
    expect(popover()?.querySelector('.aigc-tokpop-none')?.textContent).toBe(
      'no alternatives recorded (logprobs=0)'
    );
    key('ArrowRight');
    expect(document.activeElement).toBe(a); // nothing after the last one
    key('Home');
    expect(document.activeElement).toBe(once);
    key('ArrowLeft');
    expect(document.activeElement).toBe(once);
    once.blur();
    expect(popover()).toBeNull();
  });

  it('follows the pointer: opens on hover, stays while over the popover, closes on leaving', () => {
    const [view] = shown([fx('run_start_generate.json'), fx('tokens_logprobs.json')]);
    const [once, upon] = spans(view);
    const text = view.node.querySelector('.aigc-run-text') as HTMLElement;
    upon.dispatchEvent(new MouseEvent('mouseover', { bubbles: true }));
    const pop = popover() as HTMLElement;
    expect(pop.getAttribute('data-i')).toBe('1');
    upon.dispatchEvent(new MouseEvent('mouseout', { bubbles: true, relatedTarget: pop }));
    expect(popover()).toBe(pop); // moving onto the popover keeps it
    pop.dispatchEvent(new MouseEvent('mouseleave', { relatedTarget: text }));
    expect(popover()).toBeNull();
    once.dispatchEvent(new MouseEvent('mouseover', { bubbles: true }));
    expect(popover()?.getAttribute('data-i')).toBe('0');
    document.dispatchEvent(new KeyboardEvent('keydown', { key: 'Escape' })); // hover only: Escape anywhere
    expect(popover()).toBeNull();
    expect(once.hasAttribute('aria-describedby')).toBe(false);
  });

  it("downloads the run's tokens as CSV, with empty logprob columns when they were off", () => {
    const files: [string, string][] = [];
    const save = (name: string, text: string) => files.push([name, text]);
    const [lp, run] = shown([fx('run_start_generate.json'), fx('tokens_logprobs.json')], save);
    (lp.node.querySelector('button.aigc-tokens-csv') as HTMLButtonElement).click();
    expect(files[0][0]).toBe('aigc-lab-tokens-gen-7f3a.csv');
    const lines = files[0][1].split('\r\n');
    expect(lines[0]).toBe('i,id,text,ms,logprob,prob,top');
    expect(lines.length).toBe(run.tokens.length + 2);
    expect(lines[2]).toMatch(
      /^1,2402, upon,17\.25,-3\.5,0\.030\d*,"\[\{""id"":257,""text"":"" a"",""logprob"":-0\.2\},/
    );
    const [plain] = shown([fx('run_start_generate.json'), fx('tokens.json')], save);
    (plain.node.querySelector('button.aigc-tokens-csv') as HTMLButtonElement).click();
    expect(files[1][1].split('\r\n')[1]).toBe('0,464,Once,12.5,,,');
    expect(tokensCsvName('a/b c')).toBe('aigc-lab-tokens-a_b_c.csv');
  });

  it('finds a token by index, also across a gap', () => {
    const t = appendLog(
      emptyLog<TokenItem>(),
      [0, 1, 2, 5, 6].map(i => ({ i, id: i, text: 'x', ms: i }))
    );
    expect(findToken(t, 5)).toBe(3);
    expect(findToken(t, 0)).toBe(0);
    expect(findToken(t, 3)).toBe(-1);
    expect(findToken(emptyLog<TokenItem>(), 0)).toBe(-1);
  });
});

describe('HistoryTable', () => {
  it('lists runs newest first and reports selection toggles and focus', () => {
    const toggles: [string, boolean][] = [];
    const focus: string[] = [];
    const table = new HistoryTable(
      (id, on) => toggles.push([id, on]),
      id => focus.push(id)
    );
    let s = reduceAll(initialState(), [
      fx('run_start_generate.json'),
      fx('tokens.json'),
      fx('run_end_ok.json'),
      fx('run_start_train.json'),
      fx('train_step.json')
    ]);
    table.update(runList(s), new Set(['gen-7f3a']), null);
    const rows = () =>
      Array.from(table.node.querySelectorAll('tr.aigc-history-row')) as HTMLElement[];
    // Newest first by start time: the generate run started 123 ms after the training run.
    expect(rows().map(r => r.getAttribute('data-run-id'))).toEqual(['gen-7f3a', 'train-01']);
    expect(rows().map(r => r.getAttribute('data-selected'))).toEqual(['true', 'false']);
    const cells = (r: HTMLElement) => Array.from(r.querySelectorAll('td')).map(c => c.textContent);
    expect(cells(rows()[0]).slice(1, 6)).toEqual([
      'generate',
      'starter:gpt-tiny float32',
      'ok',
      '12.5 ms',
      '180'
    ]);
    expect(cells(rows()[1])[6]).toMatch(/^\d+\.\d{3}$/); // final loss
    const check = rows()[1].querySelector('input.aigc-select') as HTMLInputElement;
    check.click();
    expect(toggles).toEqual([['train-01', true]]);
    rows()[0]
      .querySelector('td.aigc-col-model')
      ?.dispatchEvent(new MouseEvent('click', { bubbles: true }));
    expect(focus).toEqual(['gen-7f3a']);
    // Rows are kept (not rebuilt) across updates; removed runs disappear.
    const kept = rows()[0];
    s = reduce(s, { type: 'runs.cleared' });
    table.update(runList(s), new Set(), null);
    expect(rows().map(r => r.getAttribute('data-run-id'))).toEqual(['train-01']);
    // A run of that id again (another kernel's state): a new row.
    s = reduceAll(initialState(), [fx('run_start_train.json'), fx('run_start_generate.json')]);
    table.update(runList(s), new Set(), null);
    expect(rows().map(r => r.getAttribute('data-run-id'))).toEqual(['gen-7f3a', 'train-01']);
    expect(rows()[0]).not.toBe(kept);
  });
});

describe('AigcLabPanel', () => {
  /** A panel attached to the page (a hidden or detached panel renders nothing), no time limit per frame. */
  function shownPanel(): AigcLabPanel {
    const panel = new AigcLabPanel();
    Widget.attach(panel, document.body);
    panel.scheduler.budgetMs = Infinity; // jsdom is slow: only the span budget counts here
    panel.scheduler.adaptive = false;
    return panel;
  }

  it('exposes the root attributes, banner and runs (newest first), batched per frame', async () => {
    const panel = shownPanel();
    const root = panel.node;
    expect(root.id).toBe('aigc-lab-panel');
    expect(panel.title.label).toBe('AIGC Lab');
    expect(root.getAttribute('data-kernel-id')).toBe('');
    expect(root.getAttribute('data-connected')).toBe('false');
    expect(root.getAttribute('data-run-count')).toBe('0');
    expect(root.getAttribute('data-reduced-motion')).toBe('false');

    const channel = new KernelChannel(fakeKernel());
    panel.follow(channel);
    expect(root.getAttribute('data-kernel-id')).toBe('k-123');

    channel.store.dispatch(fx('hello.json'));
    channel.store.dispatch(fx('run_start_generate.json'));
    channel.store.dispatch(fx('run_start_train.json'));
    // Nothing rendered until the next animation frame.
    expect(root.getAttribute('data-connected')).toBe('false');
    await frame();
    expect(root.getAttribute('data-connected')).toBe('true');
    expect(root.getAttribute('data-run-count')).toBe('2');
    const ids = Array.from(root.querySelectorAll('.aigc-run')).map(e =>
      e.getAttribute('data-run-id')
    );
    expect(ids).toEqual(['gen-7f3a', 'train-01']); // newest start first

    const banner = root.querySelector('.aigc-banner') as HTMLElement;
    expect(banner.hidden).toBe(true);
    channel.store.dispatch({
      type: 'protocol.mismatch',
      version: 2,
      reason: 'kernel speaks protocol v2; update'
    });
    await frame();
    expect(banner.hidden).toBe(false);
    expect(banner.textContent).toContain('v2');

    // A burst bigger than one frame's budget is finished over the next frames without new messages.
    const n = 2 * SPANS_PER_FRAME + 5;
    channel.store.dispatch(
      tokens(
        'gen-7f3a',
        0,
        Array.from({ length: n }, (_, k) => `${k} `)
      )
    );
    const gen = (): Element => root.querySelector('.aigc-run[data-run-id="gen-7f3a"]') as Element;
    await frame();
    expect(gen().getAttribute('data-token-count')).toBe(String(SPANS_PER_FRAME));
    expect(gen().getAttribute('data-rendered-count')).toBe(String(SPANS_PER_FRAME));
    await frame();
    expect(gen().getAttribute('data-rendered-count')).toBe(String(2 * SPANS_PER_FRAME));
    await frame();
    expect(gen().getAttribute('data-rendered-count')).toBe(String(n));
    expect(gen().getAttribute('data-token-count')).toBe(String(n));

    panel.follow(null);
    expect(root.getAttribute('data-kernel-id')).toBe('');
    expect(root.getAttribute('data-run-count')).toBe('0');
    expect(root.querySelectorAll('.aigc-run').length).toBe(0);
    panel.dispose();
  });

  it('renders nothing while hidden and catches up when shown', async () => {
    const panel = shownPanel();
    const channel = new KernelChannel(fakeKernel());
    panel.follow(channel);
    channel.store.dispatch(fx('hello.json'));
    channel.store.dispatch(fx('run_start_generate.json'));
    await frame();
    const frames = panel.scheduler.frames;
    panel.hide();
    channel.store.dispatch(tokens('gen-7f3a', 0, ['a', 'b', 'c']));
    channel.store.dispatch(fx('run_start_train.json'));
    await frame();
    await frame();
    expect(panel.scheduler.frames).toBe(frames); // no frame at all
    expect(panel.node.getAttribute('data-run-count')).toBe('1');
    expect(
      panel.node
        .querySelector('.aigc-run[data-run-id="gen-7f3a"]')
        ?.getAttribute('data-token-count')
    ).toBe('0');
    panel.show();
    await frame();
    expect(panel.node.getAttribute('data-run-count')).toBe('2');
    const gen = panel.node.querySelector('.aigc-run[data-run-id="gen-7f3a"]') as HTMLElement;
    expect(gen.getAttribute('data-token-count')).toBe('3');
    panel.dispose();
  });

  it('renders only the shown card, releases hidden ones, keeps views across notebooks', async () => {
    const panel = shownPanel();
    const one = new KernelChannel(fakeKernel());
    const other = new KernelChannel({
      ...fakeKernel(),
      id: 'k-456'
    } as unknown as Kernel.IKernelConnection);
    panel.follow(one);
    one.store.dispatch(fx('run_start_train.json'));
    one.store.dispatch(fx('run_start_generate.json'));
    one.store.dispatch(tokens('gen-7f3a', 0, ['x', 'y']));
    await frame();
    const card = (id: string) =>
      panel.node.querySelector(`.aigc-run[data-run-id="${id}"]`) as HTMLElement;
    const gen = card('gen-7f3a');
    const span = gen.querySelector('span.aigc-tok');
    expect(span).not.toBeNull();
    // Tokens for a hidden card: its header follows (cheap), its text is not rendered.
    one.store.dispatch(tokens('train-01', 0, ['p', 'q']));
    await frame();
    expect(card('train-01').hidden).toBe(true);
    expect(card('train-01').getAttribute('data-token-count')).toBe('2');
    expect(card('train-01').querySelector('.aigc-run-text')?.childNodes.length).toBe(0);
    // Another notebook and back: the same card (header, history kept), not rebuilt, and its
    // token stream kept too (the same spans, no re-render); tokens that came while away follow.
    const row = (id: string) =>
      panel.node.querySelector(`tr.aigc-history-row[data-run-id="${id}"]`);
    const genRow = row('gen-7f3a');
    expect(genRow).not.toBeNull();
    panel.follow(other);
    await frame();
    expect(card('gen-7f3a')).toBeNull();
    expect(row('gen-7f3a')).toBeNull();
    expect(panel.node.querySelectorAll('tr.aigc-history-row').length).toBe(0);
    one.store.dispatch(tokens('gen-7f3a', 2, ['z']));
    panel.follow(one);
    await frame();
    expect(card('gen-7f3a')).toBe(gen);
    expect(row('gen-7f3a')).toBe(genRow); // the history rows are kept per kernel too
    expect(panel.node.querySelectorAll('tr.aigc-history-row').length).toBe(2);
    expect(gen.querySelector('.aigc-run-text')?.textContent).toBe('xyz');
    expect(gen.querySelector('span.aigc-tok')).toBe(span);
    // Focus the other card: the newest is hidden and releases its token DOM.
    panel.focusRun('train-01');
    await frame();
    expect(gen.hidden).toBe(true);
    expect(gen.querySelector('.aigc-run-text')?.childNodes.length).toBe(0);
    expect(card('train-01').querySelector('.aigc-run-text')?.textContent).toBe('pq');
    panel.dispose();
  });

  it('summarises each chart as text for screen readers', async () => {
    const panel = shownPanel();
    const channel = new KernelChannel(fakeKernel());
    panel.follow(channel);
    channel.store.dispatch(fx('run_start_train.json'));
    channel.store.dispatch(fx('train_step.json'));
    channel.store.dispatch(fx('train_eval.json'));
    await frame();
    const loss = panel.node.querySelector('.aigc-loss-chart') as HTMLElement;
    expect(loss.getAttribute('role')).toBe('figure');
    const summary = document.getElementById(
      loss.getAttribute('aria-describedby') ?? ''
    ) as HTMLElement;
    expect(summary.textContent).toMatch(/train loss 3\.25 at step 10 of 300, min 3\.25 at step 10/);
    expect(summary.textContent).toMatch(/eval loss [\d.]+ at step \d+/);
    expect(loss.querySelector('.aigc-chart-plot')?.getAttribute('aria-hidden')).toBe('true');
    panel.dispose();
  });
});

describe('format', () => {
  it('formats numbers for the header', () => {
    expect(formatParams(5512192)).toBe('5.5M');
    expect(formatParams(124e6)).toBe('124.0M');
    expect(formatMs(12.5)).toBe('12.5 ms');
    expect(formatMs(null)).toBe('–');
    expect(formatRate(180.2)).toBe('180 tok/s');
    expect(formatRate(42.25)).toBe('42.3 tok/s');
  });

  it('makes whitespace in pieces visible and formats probabilities', () => {
    expect(visiblePiece(' a\tb\n')).toBe('·a⇥b↵');
    expect(visiblePiece('\r\n')).toBe('␍↵');
    expect(visiblePiece('')).toBe('∅');
    expect(visiblePiece('é')).toBe('é');
    expect(formatProb(0)).toBe('100.0%');
    expect(formatProb(Math.log(0.0302))).toBe('3.02%');
    expect(formatProb(-20)).toBe('< 0.01%');
  });

  it('labels every cancel state', () => {
    const run = reduce(initialState(), fx('run_start_generate.json')).runs['gen-7f3a'];
    expect(cancelLabel(run)).toBe('Cancel');
    expect(cancelLabel({ ...run, cancel: { id: 'x', state: 'refused', error: 'nope' } })).toBe(
      'cancel refused: nope'
    );
  });
});

describe('speculative runs and the stepper', () => {
  it("shows the stepper that ran, marks the draft's accepted tokens and reports acceptance", () => {
    const start: Action = {
      type: 'message',
      message: {
        v: 1,
        type: 'run.start',
        run: 'gen-spec',
        kind: 'generate',
        model: {
          name: 'starter:gpt-small',
          params: 21701632,
          dtype: 'float32',
          quant: null,
          device: 'cpu'
        },
        config: {
          prompt: 'The',
          stepper: 'fused-gpt2',
          layers: 'kernel',
          draft: 'starter:gpt-tiny'
        },
        t0: 0
      }
    };
    const s = reduceAll(initialState(), [
      start,
      fx('tokens_draft.json'),
      fx('run_end_speculative.json')
    ]);
    const view = new RunView('gen-spec', () => undefined);
    view.update(s.runs['gen-spec']);
    const n = view.node;
    const stepper = n.querySelector('.aigc-run-stepper') as HTMLElement;
    expect(stepper.hidden).toBe(false);
    expect(stepper.textContent).toBe('fused-gpt2 · kernel layers');
    const spans = Array.from(n.querySelectorAll('span.aigc-tok'));
    expect(spans.map(x => x.classList.contains('aigc-tok-draft'))).toEqual([false, true, false]);
    expect((spans[1] as HTMLElement).title).toMatch(/from the draft$/);
    expect(n.textContent).toContain('draft accepted 72%');
    expect(n.textContent).toContain('3.4 tokens per target forward');
    const plain = new RunView('gen-7f3a', () => undefined);
    plain.update(reduceAll(initialState(), [fx('run_start_generate.json')]).runs['gen-7f3a']);
    expect((plain.node.querySelector('.aigc-run-stepper') as HTMLElement).hidden).toBe(true);
  });
});
