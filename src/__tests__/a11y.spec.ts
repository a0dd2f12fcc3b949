// @vitest-environment jsdom
import { nullTranslator } from '@jupyterlab/translation';
import { afterEach, describe, expect, it, vi } from 'vitest';

import { RunAnnouncer } from '../announcer';
import { Store, runList } from '../store';
import { HistoryTable } from '../views/history';
import { fixtureAction } from './fixtures';

const trans = nullTranslator.load('aigc_lab');

describe('history table keyboard', () => {
  afterEach(() => {
    document.body.replaceChildren();
  });

  /** A table wired like the panel: showing a run re-renders with it as the focused one. */
  function setup() {
    const store = new Store();
    for (const name of ['run_start_generate.json', 'run_start_train.json']) {
      store.dispatch(fixtureAction(name));
    }
    let shown: string | null = null;
    const toggles: [string, boolean][] = [];
    const table: HistoryTable = new HistoryTable(
      (id, on) => toggles.push([id, on]),
      id => {
        shown = id;
        table.update(runList(store.state), new Set(), shown);
      },
      { trans }
    );
    document.body.appendChild(table.node);
    table.update(runList(store.state), new Set(), null);
    const rows = () => Array.from(table.node.querySelectorAll<HTMLElement>('tr.aigc-history-row'));
    const key = (el: HTMLElement, k: string) =>
      el.dispatchEvent(new KeyboardEvent('keydown', { key: k, bubbles: true, cancelable: true }));
    return { table, rows, key, toggles, shown: () => shown };
  }

  it('is a labelled grid with one row in the tab order and aria-selected on the shown run', () => {
    const { table, rows } = setup();
    const grid = table.node.querySelector('table') as HTMLTableElement;
    expect(grid.getAttribute('role')).toBe('grid');
    expect(grid.getAttribute('aria-label')).toBe('Runs');
    // nothing focused yet: the first row is the tab stop, none selected
    expect(rows().map(r => r.tabIndex)).toEqual([0, -1]);
    expect(rows().map(r => r.getAttribute('aria-selected'))).toEqual(['false', 'false']);
    for (const check of table.node.querySelectorAll('input.aigc-select')) {
      expect(check.getAttribute('aria-label')).toMatch(/^Overlay run .+ in the charts$/);
    }
  });

  it('moves and selects with the arrow keys, Home/End and Enter; Space ticks the overlay', () => {
    const { rows, key, toggles, shown } = setup();
    const [first, second] = rows();
    const firstId = first.getAttribute('data-run-id');
    const secondId = second.getAttribute('data-run-id');
    first.focus();
    key(first, 'ArrowDown');
    expect(shown()).toBe(secondId);
    expect(document.activeElement).toBe(second);
    expect(rows().map(r => r.getAttribute('aria-selected'))).toEqual(['false', 'true']);
    expect(rows().map(r => r.tabIndex)).toEqual([-1, 0]);
    key(second, 'ArrowDown'); // at the end: stays
    expect(document.activeElement).toBe(second);
    key(second, 'Home');
    expect(shown()).toBe(firstId);
    expect(document.activeElement).toBe(first);
    expect(rows().map(r => r.getAttribute('aria-selected'))).toEqual(['true', 'false']);
    key(first, 'End');
    expect(shown()).toBe(secondId);
    key(second, 'ArrowUp');
    expect(shown()).toBe(firstId);
    expect(rows().map(r => r.getAttribute('aria-selected'))).toEqual(['true', 'false']);
    second.focus();
    key(second, 'Enter');
    expect(shown()).toBe(secondId);
    expect(rows().map(r => r.getAttribute('aria-selected'))).toEqual(['false', 'true']);
    key(second, ' ');
    expect(toggles).toEqual([[secondId, true]]);
  });
});

describe('live region', () => {
  const T0 = 1795460400123.5; // run_start_generate.json's t0

  it('says when a live run starts and ends, and what became of a cancel; replays stay quiet', async () => {
    vi.useFakeTimers();
    try {
      const store = new Store();
      const announcer = new RunAnnouncer(trans, () => T0 + 500);
      const node = announcer.node;
      expect(node.getAttribute('role')).toBe('status');
      expect(node.getAttribute('aria-live')).toBe('polite');
      announcer.follow({ store });
      store.dispatch(fixtureAction('run_start_generate.json'));
      await vi.advanceTimersByTimeAsync(100);
      expect(node.textContent).toBe('Generation run gen-7f3a started on starter:gpt-tiny.');
      store.dispatch({ type: 'cancel.requested', run: 'gen-7f3a', id: 'req-3' });
      store.dispatch(fixtureAction('ack.json'));
      store.dispatch(fixtureAction('run_end_cancelled.json'));
      await vi.advanceTimersByTimeAsync(100);
      expect(node.textContent).toBe(
        'Cancel of run gen-7f3a acknowledged by the kernel. Generation run gen-7f3a was cancelled.'
      );
      announcer.dispose();

      // the same runs replayed long after they started (a reload): nothing said
      const replay = new Store();
      const late = new RunAnnouncer(trans, () => T0 + 3_600_000);
      late.follow({ store: replay });
      for (const name of ['run_start_generate.json', 'tokens.json', 'run_end_ok.json']) {
        replay.dispatch(fixtureAction(name));
      }
      await vi.advanceTimersByTimeAsync(100);
      expect(late.node.textContent).toBe('');
      late.dispose();
    } finally {
      vi.useRealTimers();
    }
  });
});
