// @vitest-environment jsdom
import { ITranslator, TranslationBundle, nullTranslator } from '@jupyterlab/translation';
import { Widget } from '@lumino/widgets';
import { describe, expect, it } from 'vitest';

import { KernelChannel } from '../channel';
import { AigcLabPanel } from '../panel';
import { latencySeries, lossSeries } from '../series';
import { Action, initialState, reduceAll } from '../store';
import { fakeKernel, frame } from './fakekernel';
import { fixtureAction } from './fixtures';

const fx = fixtureAction;

/** A translator whose every string comes back marked ⟦…⟧, so an untranslated one stands out. */
function markingTranslator(): { translator: ITranslator; bundle: TranslationBundle } {
  const base = nullTranslator.load('aigc_lab');
  const mark = (s: string) => `⟦${s}⟧`;
  const bundle = {
    __: (id: string, ...a: unknown[]) => mark(base.__(id, ...(a as string[]))),
    _n: (one: string, many: string, n: number, ...a: unknown[]) =>
      mark(base._n(one, many, n, ...(a as string[]))),
    _p: (c: string, id: string, ...a: unknown[]) => mark(base._p(c, id, ...(a as string[]))),
    _np: (c: string, one: string, many: string, n: number, ...a: unknown[]) =>
      mark(base._np(c, one, many, n, ...(a as string[]))),
    gettext: (id: string, ...a: unknown[]) => mark(base.gettext(id, ...(a as string[]))),
    ngettext: (one: string, many: string, n: number, ...a: unknown[]) =>
      mark(base.ngettext(one, many, n, ...(a as string[]))),
    pgettext: (c: string, id: string, ...a: unknown[]) =>
      mark(base.pgettext(c, id, ...(a as string[]))),
    npgettext: (c: string, one: string, many: string, n: number, ...a: unknown[]) =>
      mark(base.npgettext(c, one, many, n, ...(a as string[]))),
    dcnpgettext: (d: string, c: string, one: string, many: string, n: number, ...a: unknown[]) =>
      mark(base.dcnpgettext(d, c, one, many, n, ...(a as string[])))
  } as unknown as TranslationBundle;
  const translator = { languageCode: 'xx', load: () => bundle } as unknown as ITranslator;
  return { translator, bundle };
}

/** Data shown as it is (names from the kernel): allowed outside the marks. */
const DATA_WORDS = /exact_match|chrf|bleu|gen-chat1|train-01|starter:gpt-tiny|cpu|float32|int8/g;

/** What is left of `text` once every translated part and every data word is taken out. */
function untranslated(text: string): string {
  let rest = text;
  for (let prev = ''; prev !== rest;) {
    prev = rest;
    rest = rest.replace(/⟦[^⟦⟧]*⟧/g, ''); // innermost first: a translated figure inside a sentence
  }
  return rest
    .replace(DATA_WORDS, '')
    .replace(/[^A-Za-z]+/g, ' ')
    .trim();
}

/** Untranslated words in `root`'s text (outside the data containers) and in its titles and labels. */
function leaks(root: Element, dataSelectors: string): string[] {
  const found: string[] = [];
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node !== null; node = walker.nextNode()) {
    const parent = node.parentElement;
    if (parent !== null && parent.closest(dataSelectors) !== null) {
      continue;
    }
    const left = untranslated(node.textContent ?? '');
    if (left !== '') {
      found.push(`text "${node.textContent}" in .${parent?.className}`);
    }
  }
  for (const el of [root, ...Array.from(root.querySelectorAll('*'))]) {
    for (const attr of ['title', 'aria-label']) {
      const v = el.getAttribute(attr);
      if (v !== null && untranslated(v) !== '') {
        found.push(`${attr} "${v}" on .${el.className}`);
      }
    }
  }
  return found;
}

const chatTokens: Action = {
  type: 'message',
  message: {
    v: 1,
    type: 'tokens',
    run: 'gen-chat1',
    items: [
      {
        i: 0,
        id: 5,
        text: '$12',
        ms: 20,
        logprob: -0.2,
        top: [
          { id: 5, text: '$12', logprob: -0.2 },
          { id: 6, text: '$9', logprob: -2 }
        ]
      },
      { i: 1, id: 7, text: ' x', ms: 31, logprob: -9, top: [{ id: 8, text: 'y', logprob: -1 }] },
      { i: 2, id: 9, text: ' z', ms: 40, logprob: -1, top: [] },
      { i: 3, id: null, text: '.', ms: 41, draft: true }
    ]
  }
};

const evalWithMetrics: Action = {
  type: 'message',
  message: {
    v: 1,
    type: 'train.eval',
    run: 'train-01',
    step: 20,
    val_loss: 2.5,
    ppl: 12.2,
    metrics: { exact_match: 0.5, chrf: 40, bleu: 10 }
  }
};

describe('translation of the run card, the charts and the token inspector', () => {
  it('sends every string they show through the translator', async () => {
    const { translator } = markingTranslator();
    const panel = new AigcLabPanel({ translator });
    Widget.attach(panel, document.body);
    panel.scheduler.budgetMs = Infinity;
    panel.scheduler.adaptive = false;
    const channel = new KernelChannel(fakeKernel('k-i18n'));
    panel.follow(channel);
    for (const a of [
      fx('hello.json'),
      fx('run_start_train.json'),
      fx('train_step.json'),
      evalWithMetrics,
      fx('checkpoint.json'),
      fx('run_start_chat.json'),
      chatTokens,
      { type: 'cancel.requested', run: 'gen-chat1', id: 'q1' } as Action,
      { type: 'cancel.failed', run: 'gen-chat1', id: 'q1', error: 'no answer' } as Action
    ]) {
      channel.store.dispatch(a);
    }
    await new Promise(r => setTimeout(r, 250)); // past the charts' redraw interval
    await frame();
    await frame();
    const cards = Array.from(panel.node.querySelectorAll('.aigc-run'));
    expect(cards.length).toBe(2);
    const chat = panel.node.querySelector('.aigc-run[data-run-id="gen-chat1"]') as HTMLElement;
    expect(chat.hidden).toBe(false);
    expect(chat.querySelectorAll('.aigc-chat-turn').length).toBe(4);
    expect(chat.querySelectorAll('.aigc-run-text span.aigc-tok').length).toBe(4);
    const data =
      '.aigc-run-text, .aigc-chat-content, .aigc-run-model, [data-metric="model"] .aigc-metric-value, .aigc-cancel-state, .aigc-tokpop-piece';
    const problems: string[] = [];
    for (const card of cards) {
      problems.push(...leaks(card, data));
    }
    // The tooltip of a token without logprobs (the draft one), and the popover of one with them.
    const spans = chat.querySelectorAll<HTMLElement>('.aigc-run-text span.aigc-tok');
    expect(spans[3].title).toMatch(/^⟦#3 · id – · "\." · [\d.]+ ms⟧ · ⟦from the draft⟧$/);
    for (const k of [0, 1, 2]) {
      spans[k].focus();
      const pop = document.querySelector('.aigc-tokpop') as HTMLElement;
      expect(pop).not.toBeNull();
      problems.push(...leaks(pop, '.aigc-tokpop-piece'));
      spans[k].blur();
    }
    const charts = Array.from(panel.node.querySelectorAll('.aigc-chart'));
    expect(charts.length).toBe(3);
    const evalChart = panel.node.querySelector('.aigc-eval-chart') as HTMLElement;
    expect(evalChart.hidden).toBe(false);
    for (const chart of charts) {
      problems.push(...leaks(chart, '.never'));
    }
    expect(problems).toEqual([]);
    // The visible card strings really were marked (the check above is not vacuous).
    expect(chat.querySelector('.aigc-chat-role')?.textContent).toBe('⟦System⟧');
    expect(chat.querySelector('.aigc-chat-reply-role')?.textContent).toBe('⟦Assistant · reply⟧');
    expect(chat.querySelector('.aigc-run-status')?.textContent).toBe('⟦running⟧');
    expect(chat.querySelector('button.aigc-interrupt')?.textContent).toBe('⟦Interrupt kernel⟧');
    const train = panel.node.querySelector('.aigc-run[data-run-id="train-01"]') as HTMLElement;
    expect(train.querySelector('.aigc-train-summary')?.textContent).toContain(
      '⟦val_loss 2.5000⟧ · ⟦ppl 12.20⟧ · exact_match 0.500'
    );
    expect(evalChart.querySelector('.aigc-chart-summary')?.textContent).toMatch(
      /^⟦Eval metrics chart⟧: ⟦exact_match 0.500 at step 20 \(best 0.500, highest, at step 20\)⟧/
    );
    panel.dispose();
  });

  it('translates the series labels and markers the charts draw on their canvas', () => {
    const { bundle } = markingTranslator();
    const s = reduceAll(initialState(), [
      fx('run_start_train.json'),
      fx('train_step.json'),
      evalWithMetrics,
      fx('run_start_generate.json'),
      fx('tokens.json')
    ]);
    const loss = lossSeries([s.runs['train-01']], 0, 800, bundle);
    expect(loss.series.map(x => x.label)).toEqual(['⟦train loss⟧', '⟦eval loss⟧']);
    const lat = latencySeries([s.runs['gen-7f3a']], 0, 800, bundle);
    expect(lat.markers[0].label).toMatch(/^⟦TTFT [\d.]+ ms⟧$/);
  });
});
