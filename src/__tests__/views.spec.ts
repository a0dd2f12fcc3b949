// @vitest-environment jsdom
import { Kernel } from '@jupyterlab/services';
import { Signal } from '@lumino/signaling';
import { describe, expect, it, vi } from 'vitest';

import { KernelChannel } from '../channel';
import { AigcLabPanel } from '../panel';
import { TokenItem } from '../protocol';
import { Action, initialState, reduce, reduceAll } from '../store';
import { cancelLabel, formatMs, formatParams, formatRate } from '../views/format';
import { RunView } from '../views/runview';
import { fixtureAction } from './fixtures';

const fx = fixtureAction;

function tokens(run: string, from: number, pieces: string[]): Action {
  const items: TokenItem[] = pieces.map((text, k) => ({ i: from + k, id: null, text, ms: 10 + k }));
  return { type: 'message', message: { v: 1, type: 'tokens', run, items } };
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
    const textNode = text.firstChild;
    expect(text.textContent).toBe('Once upon a ✓');
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
    expect(text.firstChild).toBe(textNode); // appended in place, not rebuilt
    expect(n.getAttribute('data-token-count')).toBe('5');
    expect(n.getAttribute('data-dups')).toBe('1');
    expect(n.getAttribute('data-status')).toBe('ok');
    expect(cancel.hidden).toBe(true);
    const header = n.querySelector('.aigc-run-header')?.textContent ?? '';
    expect(header).toContain('180 tok/s');
    expect(header).toContain('TTFT 12.5 ms');
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

  it('renders 5000 tokens as one text node', () => {
    const view = new RunView('r', () => undefined);
    let s = initialState();
    for (let i = 0; i < 5000; i += 50) {
      s = reduce(s, tokens('r', i, Array.from({ length: 50 }, (_, k) => `${i + k} `)));
      view.update(s.runs['r']);
    }
    const text = view.node.querySelector('.aigc-run-text') as HTMLElement;
    expect(text.childNodes.length).toBe(1);
    expect(text.textContent).toBe(s.runs['r'].text);
    expect(view.node.getAttribute('data-token-count')).toBe('5000');
  });
});

describe('AigcLabPanel', () => {
  function fakeKernel(): Kernel.IKernelConnection {
    const k = {
      id: 'k-123',
      isDisposed: false,
      registerCommTarget: vi.fn(),
      removeCommTarget: vi.fn(),
      requestCommInfo: () => Promise.resolve({ content: { status: 'ok', comms: {} } }),
      hasComm: () => false,
      statusChanged: new Signal<object, string>({}),
      connectionStatusChanged: new Signal<object, string>({}),
      disposed: new Signal<object, void>({})
    };
    return k as unknown as Kernel.IKernelConnection;
  }

  it('exposes the root attributes, banner and runs (newest first), batched per frame', async () => {
    const panel = new AigcLabPanel();
    const root = panel.node;
    expect(root.id).toBe('aigc-lab-panel');
    expect(panel.title.label).toBe('AIGC Lab');
    expect(root.getAttribute('data-kernel-id')).toBe('');
    expect(root.getAttribute('data-connected')).toBe('false');
    expect(root.getAttribute('data-run-count')).toBe('0');

    const channel = new KernelChannel(fakeKernel());
    panel.follow(channel);
    expect(root.getAttribute('data-kernel-id')).toBe('k-123');

    channel.store.dispatch(fx('hello.json'));
    channel.store.dispatch(fx('run_start_generate.json'));
    channel.store.dispatch(fx('run_start_train.json'));
    // Nothing rendered until the next animation frame.
    expect(root.getAttribute('data-connected')).toBe('false');
    await new Promise(r => requestAnimationFrame(() => r(undefined)));
    await new Promise(r => setTimeout(r, 0));
    expect(root.getAttribute('data-connected')).toBe('true');
    expect(root.getAttribute('data-run-count')).toBe('2');
    const ids = Array.from(root.querySelectorAll('.aigc-run')).map(e => e.getAttribute('data-run-id'));
    expect(ids).toEqual(['train-01', 'gen-7f3a']);

    const banner = root.querySelector('.aigc-banner') as HTMLElement;
    expect(banner.hidden).toBe(true);
    channel.store.dispatch({ type: 'protocol.mismatch', version: 2, reason: 'kernel speaks protocol v2; update' });
    await new Promise(r => requestAnimationFrame(() => r(undefined)));
    expect(banner.hidden).toBe(false);
    expect(banner.textContent).toContain('v2');

    panel.follow(null);
    expect(root.getAttribute('data-kernel-id')).toBe('');
    expect(root.getAttribute('data-run-count')).toBe('0');
    expect(root.querySelectorAll('.aigc-run').length).toBe(0);
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

  it('labels every cancel state', () => {
    const run = reduce(initialState(), fx('run_start_generate.json')).runs['gen-7f3a'];
    expect(cancelLabel(run)).toBe('Cancel');
    expect(cancelLabel({ ...run, cancel: { id: 'x', state: 'refused', error: 'nope' } })).toBe(
      'cancel refused: nope'
    );
  });
});
