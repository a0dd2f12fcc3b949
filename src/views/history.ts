/**
 * The run history table: one row per run (newest first) with kind, model, status, TTFT, tok/s,
 * final loss and start time. A row's checkbox selects the run for the charts' overlay; clicking
 * the rest of the row shows that run's card above.
 *
 * DOM contract (used by the UI tests):
 *   .aigc-history table tbody tr.aigc-history-row[data-run-id][data-selected]
 *     input.aigc-select (checkbox)
 */

import { RunState } from '../store';
import { HistoryRow, historyRow } from '../series';
import { formatMs, formatRate } from './format';

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

interface RowView {
  tr: HTMLTableRowElement;
  check: HTMLInputElement;
  cells: HTMLTableCellElement[];
  run: RunState | null;
  selected: boolean | null;
}

const COLUMNS: [string, string][] = [
  ['kind', 'kind'],
  ['model', 'model'],
  ['status', 'status'],
  ['ttft', 'TTFT'],
  ['toks', 'tok/s'],
  ['loss', 'final loss'],
  ['started', 'started']
];

export class HistoryTable {
  constructor(
    onToggle: (runId: string, selected: boolean) => void,
    onFocus: (runId: string) => void
  ) {
    this._onToggle = onToggle;
    this._onFocus = onFocus;
    this.node = document.createElement('div');
    this.node.className = 'aigc-history';
    const table = document.createElement('table');
    table.className = 'aigc-history-table';
    const head = document.createElement('thead');
    const hr = document.createElement('tr');
    const th0 = document.createElement('th');
    th0.title = 'Overlay in the charts';
    hr.appendChild(th0);
    for (const [key, label] of COLUMNS) {
      const th = document.createElement('th');
      th.className = `aigc-col-${key}`;
      th.textContent = label;
      hr.appendChild(th);
    }
    head.appendChild(hr);
    this._body = document.createElement('tbody');
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
  }

  private _makeRow(runId: string): RowView {
    const tr = document.createElement('tr');
    tr.className = 'aigc-history-row';
    tr.setAttribute('data-run-id', runId);
    const td0 = document.createElement('td');
    const check = document.createElement('input');
    check.type = 'checkbox';
    check.className = 'aigc-select';
    check.title = 'Overlay this run in the charts';
    check.addEventListener('click', () => this._onToggle(runId, check.checked));
    td0.appendChild(check);
    tr.appendChild(td0);
    const cells = COLUMNS.map(([key]) => cell(tr, `aigc-col-${key}`));
    tr.addEventListener('click', ev => {
      if (ev.target !== check) {
        this._onFocus(runId);
      }
    });
    return { tr, check, cells, run: null, selected: null };
  }

  private _fill(row: RowView, run: RunState, selected: boolean, focused: boolean): void {
    if (row.selected !== selected) {
      row.selected = selected;
      row.check.checked = selected;
      row.tr.setAttribute('data-selected', selected ? 'true' : 'false');
    }
    row.tr.classList.toggle('aigc-focused', focused);
    if (row.run === run) {
      return;
    }
    row.run = run;
    const r: HistoryRow = historyRow(run);
    const [kind, model, status, ttft, toks, loss, started] = row.cells;
    setText(kind, r.kind);
    setText(model, run.model === null ? '–' : run.model.quant !== null ? `${run.model.name} ${run.model.quant}` : `${run.model.name} ${run.model.dtype}`);
    model.title = r.model;
    setText(status, r.status);
    status.className = `aigc-col-status aigc-status-${r.status}`;
    setText(ttft, r.ttft_ms === null ? '–' : formatMs(r.ttft_ms));
    setText(toks, r.tok_s === null ? '–' : formatRate(r.tok_s).replace(' tok/s', ''));
    setText(
      loss,
      r.final_loss === null
        ? '–'
        : r.final_val_loss === null
          ? r.final_loss.toFixed(3)
          : `${r.final_loss.toFixed(3)} / ${r.final_val_loss.toFixed(3)}`
    );
    loss.title = r.final_val_loss === null ? 'train loss' : 'train loss / eval loss';
    setText(started, startedLabel(r.started));
    row.tr.setAttribute('data-status', r.status);
  }

  private _rows = new Map<string, RowView>();
  private _body: HTMLTableSectionElement;
  private _onToggle: (runId: string, selected: boolean) => void;
  private _onFocus: (runId: string) => void;
}
