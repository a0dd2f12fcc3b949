/**
 * The run history table: one row per run (newest first) with kind, model, status, TTFT, tok/s,
 * final loss and start time. A row's checkbox selects the run for the charts' overlay; clicking
 * the rest of the row shows that run's card above.
 *
 * Keyboard (an ARIA grid, single selection that follows focus): one row is in the tab order
 * (roving tabindex, the shown run's); ArrowUp / ArrowDown / Home / End move to another row and
 * show its run, Enter shows the focused row's run, Space ticks its overlay checkbox.
 * `aria-selected` is true on the row whose run card is shown.
 *
 * DOM contract (used by the UI tests):
 *   .aigc-history table[role=grid] tbody tr.aigc-history-row[data-run-id][data-selected][aria-selected][tabindex]
 *     data-selected: ticked for the charts' overlay; aria-selected: its card is shown
 *     input.aigc-select (checkbox, labelled)
 */

import { TranslationBundle } from '@jupyterlab/translation';

import { translationBundle } from '../i18n';
import { RunState } from '../store';
import { HistoryRow, historyRow } from '../series';
import { formatMs, rateValue } from './format';

function cell(row: HTMLTableRowElement, className: string): HTMLTableCellElement {
  const td = document.createElement('td');
  td.className = className;
  row.appendChild(td);
  return td;
}

function setText(node: HTMLElement, text: string): void {
  if (node.textContent !== text) {
    node.textContent = text;
  }
}

function startedLabel(t0: number | null): string {
  if (t0 === null) {
    return '–';
  }
  const d = new Date(t0);
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

interface IRowView {
  tr: HTMLTableRowElement;
  check: HTMLInputElement;
  cells: HTMLTableCellElement[];
  run: RunState | null;
  selected: boolean | null;
}

export namespace HistoryTable {
  export interface IOptions {
    /** Translations (default: English as written). */
    trans?: TranslationBundle;
    /** Id of the element that names the table (its section title). */
    labelledBy?: string;
  }
}

export class HistoryTable {
  constructor(
    onToggle: (runId: string, selected: boolean) => void,
    onFocus: (runId: string) => void,
    options: HistoryTable.IOptions = {}
  ) {
    this._onToggle = onToggle;
    this._onFocus = onFocus;
    const trans = (this._trans = options.trans ?? translationBundle());
    this.node = document.createElement('div');
    this.node.className = 'aigc-history';
    const table = document.createElement('table');
    table.className = 'aigc-history-table';
    table.setAttribute('role', 'grid');
    if (options.labelledBy) {
      table.setAttribute('aria-labelledby', options.labelledBy);
    } else {
      table.setAttribute('aria-label', trans.__('Runs'));
    }
    const head = document.createElement('thead');
    const hr = document.createElement('tr');
    const th0 = document.createElement('th');
    th0.title = trans.__('Overlay in the charts');
    const th0Text = document.createElement('span');
    th0Text.className = 'aigc-sr-only';
    th0Text.textContent = trans.__('Overlay');
    th0.appendChild(th0Text);
    hr.appendChild(th0);
    const columns: [string, string][] = [
      ['kind', trans.__('kind')],
      ['model', trans.__('model')],
      ['status', trans.__('status')],
      ['ttft', trans.__('TTFT')],
      ['toks', trans.__('tok/s')],
      ['loss', trans.__('final loss')],
      ['started', trans.__('started')]
    ];
    for (const [key, label] of columns) {
      const th = document.createElement('th');
      th.className = `aigc-col-${key}`;
      th.textContent = label;
      hr.appendChild(th);
    }
    this._columns = columns.map(([key]) => key);
    head.appendChild(hr);
    this._table = table;
    this._body = this._newBody();
    table.append(head, this._body);
    this.node.appendChild(table);
  }

  readonly node: HTMLDivElement;

  /** Show `runs` (start order; displayed newest first) with `selected` checked. */
  update(runs: readonly RunState[], selected: ReadonlySet<string>, focused: string | null): void {
    const keep = new Set(runs.map(r => r.id));
    for (const [id, row] of this._rows) {
      if (!keep.has(id)) {
        row.tr.remove();
        this._rows.delete(id);
      }
    }
    this._focused = focused;
    // Newest first; rows already in place are left alone.
    let cursor: ChildNode | null = this._body.firstChild;
    for (let k = runs.length - 1; k >= 0; k--) {
      const run = runs[k];
      let row = this._rows.get(run.id);
      if (row === undefined) {
        row = this._makeRow(run.id);
        this._rows.set(run.id, row);
      }
      if (row.tr === cursor) {
        cursor = cursor.nextSibling;
      } else {
        this._body.insertBefore(row.tr, cursor);
      }
      this._fill(row, run, selected.has(run.id), focused === run.id);
    }
    this._rove();
  }

  /**
   * Show the rows kept under `key` (one kernel's runs; null: none), made on first use; the rows
   * shown before are kept under their key. Switching notebooks then moves one `tbody`, instead
   * of removing every row and making the other kernel's anew.
   */
  show(key: object | null): void {
    if (key === this._key) {
      return;
    }
    if (this._key !== null) {
      this._kept.set(this._key, { body: this._body, rows: this._rows });
    }
    const kept = key === null ? undefined : this._kept.get(key);
    if (key !== null) {
      this._kept.delete(key);
    }
    this._swapIn(kept?.body ?? this._newBody(), kept?.rows ?? new Map(), key);
  }

  /** Drop the rows kept under `key` (its kernel is gone); shown, they are cleared. */
  forget(key: object): void {
    this._kept.delete(key);
    if (key === this._key) {
      this._swapIn(this._newBody(), new Map(), null);
    }
  }

  private _swapIn(
    body: HTMLTableSectionElement,
    rows: Map<string, IRowView>,
    key: object | null
  ): void {
    this._table.replaceChild(body, this._body);
    this._body = body;
    this._rows = rows;
    this._key = key;
  }

  private _newBody(): HTMLTableSectionElement {
    const body = document.createElement('tbody');
    body.addEventListener('keydown', ev => this._onKeydown(ev));
    return body;
  }

  /** Put keyboard focus on the row of `runId` (if shown). */
  focusRow(runId: string): void {
    this._rows.get(runId)?.tr.focus();
  }

  /** The one row in the tab order: the shown run's, else the first. */
  private _rove(): void {
    const stop =
      (this._focused !== null ? this._rows.get(this._focused)?.tr : undefined) ??
      (this._body.firstElementChild as HTMLTableRowElement | null);
    for (const row of this._rows.values()) {
      const index = row.tr === stop ? '0' : '-1';
      if (row.tr.getAttribute('tabindex') !== index) {
        row.tr.setAttribute('tabindex', index);
      }
    }
  }

  private _onKeydown(ev: KeyboardEvent): void {
    const tr = (ev.target as HTMLElement | null)?.closest('tr.aigc-history-row');
    if (!(tr instanceof HTMLTableRowElement) || tr.parentElement !== this._body) {
      return;
    }
    const runId = tr.getAttribute('data-run-id');
    if (runId === null) {
      return;
    }
    if (ev.key === ' ' && ev.target === tr) {
      ev.preventDefault();
      this._rows.get(runId)?.check.click();
      return;
    }
    if (ev.key === 'Enter') {
      ev.preventDefault();
      this._select(runId);
      return;
    }
    const rows = Array.from(this._body.children) as HTMLTableRowElement[];
    const at = rows.indexOf(tr);
    const to =
      ev.key === 'ArrowDown'
        ? at + 1
        : ev.key === 'ArrowUp'
          ? at - 1
          : ev.key === 'Home'
            ? 0
            : ev.key === 'End'
              ? rows.length - 1
              : null;
    if (to === null) {
      return;
    }
    ev.preventDefault();
    const next = rows[Math.max(0, Math.min(rows.length - 1, to))];
    const nextId = next?.getAttribute('data-run-id');
    if (next !== undefined && nextId !== null && nextId !== undefined) {
      this._select(nextId);
      next.focus();
    }
  }

  /** Show `runId`'s card: the row becomes the tab stop now, aria-selected on the next update. */
  private _select(runId: string): void {
    this._focused = runId;
    this._rove();
    this._onFocus(runId);
  }

  private _makeRow(runId: string): IRowView {
    const tr = document.createElement('tr');
    tr.className = 'aigc-history-row';
    tr.setAttribute('data-run-id', runId);
    tr.setAttribute('aria-selected', 'false');
    tr.setAttribute('tabindex', '-1');
    const td0 = document.createElement('td');
    const check = document.createElement('input');
    check.type = 'checkbox';
    check.className = 'aigc-select';
    check.title = this._trans.__('Overlay this run in the charts');
    check.setAttribute('aria-label', this._trans.__('Overlay run %1 in the charts', runId));
    check.tabIndex = -1; // reached from its row (Space), so Tab leaves the grid in one step
    check.addEventListener('click', () => this._onToggle(runId, check.checked));
    td0.appendChild(check);
    tr.appendChild(td0);
    const cells = this._columns.map(key => cell(tr, `aigc-col-${key}`));
    tr.addEventListener('click', ev => {
      if (ev.target !== check) {
        this._select(runId);
      }
    });
    return { tr, check, cells, run: null, selected: null };
  }

  private _fill(row: IRowView, run: RunState, selected: boolean, focused: boolean): void {
    if (row.selected !== selected) {
      row.selected = selected;
      row.check.checked = selected;
      row.tr.setAttribute('data-selected', selected ? 'true' : 'false');
    }
    row.tr.classList.toggle('aigc-focused', focused);
    const aria = focused ? 'true' : 'false';
    if (row.tr.getAttribute('aria-selected') !== aria) {
      row.tr.setAttribute('aria-selected', aria);
    }
    if (row.run === run) {
      return;
    }
    row.run = run;
    const r: HistoryRow = historyRow(run, this._trans);
    const [kind, model, status, ttft, toks, loss, started] = row.cells;
    setText(kind, r.kind);
    setText(
      model,
      run.model === null
        ? '–'
        : `${run.model.name} ${run.model.quant !== null ? run.model.quant : run.model.dtype}`
    );
    model.title = r.model;
    setText(status, r.status);
    status.className = `aigc-col-status aigc-status-${r.status}`;
    setText(ttft, r.ttft_ms === null ? '–' : formatMs(r.ttft_ms, this._trans));
    setText(toks, rateValue(r.tok_s));
    setText(
      loss,
      r.final_loss === null
        ? '–'
        : r.final_val_loss === null
          ? r.final_loss.toFixed(3)
          : `${r.final_loss.toFixed(3)} / ${r.final_val_loss.toFixed(3)}`
    );
    loss.title =
      r.final_val_loss === null
        ? this._trans.__('train loss')
        : this._trans.__('train loss / eval loss');
    setText(started, startedLabel(r.started));
    row.tr.setAttribute('data-status', r.status);
  }

  private _rows = new Map<string, IRowView>();
  /** The rows not shown, by key (`show`). */
  private _kept = new Map<object, { body: HTMLTableSectionElement; rows: Map<string, IRowView> }>();
  private _key: object | null = null;
  private _table: HTMLTableElement;
  private _focused: string | null = null;
  private _trans: TranslationBundle;
  private _columns: string[];
  private _body: HTMLTableSectionElement;
  private _onToggle: (runId: string, selected: boolean) => void;
  private _onFocus: (runId: string) => void;
}
