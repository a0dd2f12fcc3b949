/**
 * The AIGC Lab side panel: shows the runs of the followed kernel (the active notebook's).
 *
 * Layout: the toolbar (command buttons), a head (title, connection), the protocol banner, the focused run's card
 * (metrics strip, Stop button, live token stream), the latency chart and the loss chart (uPlot),
 * and the run history table whose checkboxes choose which runs the charts overlay.
 *
 * Store changes only schedule a render; rendering happens at most once per animation frame and
 * touches only runs whose state object changed, so a fast token stream never blocks the page. A
 * burst larger than a card's per-frame budget (`SPANS_PER_FRAME`) continues on the next frames.
 * Charts redraw at most every `CHART_INTERVAL_MS` while data streams.
 *
 * DOM contract (used by the UI tests):
 *   #aigc-lab-panel[data-kernel-id][data-connected][data-link][data-run-count][data-theme-light]
 *     data-link: connected | waiting | comm-closed | websocket-lost | disconnected | restarting | dead | none
 *     .aigc-banner   visible when the kernel speaks a newer protocol
 *     .aigc-runs > .aigc-run ...   newest run first; only the focused run (default: newest) shown
 *     .aigc-chart.aigc-latency-chart / .aigc-loss-chart  [data-series-count][data-point-count]
 *     .aigc-history tr.aigc-history-row[data-run-id][data-selected]
 *     .aigc-toolbar   the plugin's command buttons (src/toolbar.ts): button.aigc-stop-run,
 *                     button.aigc-load-history, button.aigc-export-csv, button.aigc-clear
 *     .aigc-live[role=status]   the polite live region (src/announcer.ts)
 */

import { ITranslator, TranslationBundle } from '@jupyterlab/translation';
import { PanelLayout, Widget } from '@lumino/widgets';

import { KernelChannel } from './channel';
import {
  historyCsv,
  historyRows,
  latencySeries,
  lossSeries,
  pickChartRuns
} from './series';
import { translationBundle } from './i18n';
import { RunState, State, linkSummary, runList } from './store';
import { LiveChart } from './views/chart';
import { downloadText } from './views/download';
import { HistoryTable } from './views/history';
import { RunView } from './views/runview';

export { downloadText };

export const PANEL_ID = 'aigc-lab-panel';

/** Minimum interval between two chart redraws while data streams. */
export const CHART_INTERVAL_MS = 200;

/** The panel's settings (schema/plugin.json). */
export interface PanelSettings {
  /** Runs kept per kernel; the oldest ended runs are dropped beyond it. */
  historySize: number;
  /** Tint each streamed token by its latency. */
  tinting: boolean;
  /** Charts show the last this many tokens / steps (0: all). */
  chartWindow: number;
}

export const DEFAULT_SETTINGS: PanelSettings = {
  historySize: 100,
  tinting: true,
  chartWindow: 0
};

export namespace AigcLabPanel {
  export interface IOptions {
    /** Translations of the panel's strings (default: English as written). */
    translator?: ITranslator | null;
    /** A toolbar (the plugin's command buttons), shown at the top. */
    toolbar?: Widget | null;
    /** A live region for announcements (the plugin's `RunAnnouncer`), placed in the panel. */
    liveRegion?: HTMLElement | null;
  }
}

export class AigcLabPanel extends Widget {
  constructor(options: AigcLabPanel.IOptions = {}) {
    super();
    const trans = (this._trans = translationBundle(options.translator));
    this.id = PANEL_ID;
    this.addClass('aigc-lab-panel');
    this.title.label = trans.__('AIGC Lab');
    this.title.caption = trans.__('AIGC Lab: live runs of the active notebook’s kernel');
    this.node.setAttribute('role', 'region');
    this.node.setAttribute('aria-label', trans.__('AIGC Lab'));

    const node = this.node;
    node.setAttribute('data-kernel-id', '');
    node.setAttribute('data-connected', 'false');
    node.setAttribute('data-link', 'none');
    node.setAttribute('data-run-count', '0');

    const head = document.createElement('div');
    head.className = 'aigc-panel-head';
    const title = document.createElement('span');
    title.className = 'aigc-panel-title';
    title.textContent = trans.__('AIGC Lab');
    this._statusLine = document.createElement('span');
    this._statusLine.className = 'aigc-connection';
    head.append(title, this._statusLine);

    this._banner = document.createElement('div');
    this._banner.className = 'aigc-banner';
    this._banner.setAttribute('role', 'alert');
    this._banner.hidden = true;

    this._empty = document.createElement('div');
    this._empty.className = 'aigc-empty';

    this._runsBox = document.createElement('div');
    this._runsBox.className = 'aigc-runs';

    this._charts = document.createElement('div');
    this._charts.className = 'aigc-charts';
    this._latency = new LiveChart({
      className: 'aigc-latency-chart',
      title: trans.__('Inter-token latency'),
      xLabel: trans.__('token'),
      yLabel: trans.__('ms'),
      height: 150
    });
    this._latency.emptyText = trans.__('No tokens yet.');
    this._loss = new LiveChart({
      className: 'aigc-loss-chart',
      title: trans.__('Loss'),
      xLabel: trans.__('step'),
      yLabel: trans.__('loss'),
      height: 150
    });
    this._loss.emptyText = trans.__('No training steps yet.');
    this._charts.append(this._latency.node, this._loss.node);

    const historyTitle = document.createElement('div');
    historyTitle.className = 'aigc-section-title';
    historyTitle.id = `${PANEL_ID}-history-title`;
    historyTitle.textContent = trans.__('Runs (tick to overlay in the charts)');
    this._history = new HistoryTable(
      (id, on) => this.setSelected(id, on),
      id => this.focusRun(id),
      { trans, labelledBy: historyTitle.id }
    );
    const historyBox = document.createElement('div');
    historyBox.className = 'aigc-history-box';
    historyBox.append(historyTitle, this._history.node);

    node.append(head, this._banner, this._empty, this._runsBox, this._charts, historyBox);
    if (options.liveRegion) {
      node.append(options.liveRegion);
    }
    if (options.toolbar) {
      // a layout for the toolbar widget (attach/show messages reach it); the rest is plain DOM
      const layout = new PanelLayout();
      this.layout = layout;
      layout.insertWidget(0, options.toolbar);
    }
    this._renderNow();
  }

  /** The channel being shown, or null when no notebook kernel is followed. */
  get channel(): KernelChannel | null {
    return this._channel;
  }

  get settings(): PanelSettings {
    return this._settings;
  }

  /** Apply new settings (from the settings registry). */
  set settings(value: PanelSettings) {
    this._settings = { ...value };
    for (const view of this._views.values()) {
      view.tinting = value.tinting;
    }
    this._channel?.store.dispatch({ type: 'limits', maxRuns: value.historySize });
    this._chartKey = '';
    this._rendered = null;
    this._schedule();
  }

  /** Runs selected for the charts' overlay (of the followed kernel). */
  get selected(): ReadonlySet<string> {
    return this._selection();
  }

  /** Select or unselect a run for the charts' overlay. */
  setSelected(runId: string, on: boolean): void {
    const sel = this._selection();
    if (on) {
      sel.add(runId);
    } else {
      sel.delete(runId);
    }
    this._chartKey = '';
    this._rendered = null;
    this._schedule();
  }

  /** Show `runId`'s card (null: the newest run). */
  focusRun(runId: string | null): void {
    this._focused = runId;
    this._rendered = null;
    this._schedule();
  }

  /** The followed kernel's run history as CSV text (newest first). */
  historyCsv(): string {
    const state = this._channel?.store.state ?? null;
    return historyCsv(state === null ? [] : historyRows(state));
  }

  /** Download the run history as a CSV file. */
  exportCsv(): void {
    const stamp = new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19);
    downloadText(`aigc-lab-runs-${stamp}.csv`, this.historyCsv());
  }

  /** Forget the followed kernel's ended runs. */
  clearHistory(): void {
    const channel = this._channel;
    if (channel === null) {
      return;
    }
    channel.store.dispatch({ type: 'runs.cleared' });
    const keep = new Set(channel.store.state.order);
    const sel = this._selection();
    for (const id of Array.from(sel)) {
      if (!keep.has(id)) {
        sel.delete(id);
      }
    }
    this._focused = null;
  }

  /** Re-read the theme's colours (JupyterLab theme changed). */
  retheme(): void {
    const light = document.body.getAttribute('data-jp-theme-light') !== 'false';
    this.node.setAttribute('data-theme-light', light ? 'true' : 'false');
    this._latency.retheme();
    this._loss.retheme();
  }

  /** Show the runs of `channel` (the active notebook's kernel), or nothing. */
  follow(channel: KernelChannel | null): void {
    if (channel !== null && channel.isDisposed) {
      channel = null;
    }
    if (channel === this._channel) {
      return;
    }
    this._unsubscribe?.();
    this._unsubscribe = null;
    this._channel?.disposed.disconnect(this._onChannelDisposed, this);
    this._channel = channel;
    // A different kernel: drop the old views, rebuild from that kernel's state.
    this._views.clear();
    this._runsBox.replaceChildren();
    this._rendered = null;
    this._focused = null;
    this._chartKey = '';
    if (channel !== null) {
      channel.store.dispatch({ type: 'limits', maxRuns: this._settings.historySize });
      this._unsubscribe = channel.store.subscribe(() => this._schedule());
      channel.disposed.connect(this._onChannelDisposed, this);
    }
    this._renderNow();
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._unsubscribe?.();
    if (this._frame !== 0) {
      cancelAnimationFrame(this._frame);
    }
    if (this._chartTimer !== null) {
      clearTimeout(this._chartTimer);
    }
    this._latency.dispose();
    this._loss.dispose();
    super.dispose();
  }

  private _selection(): Set<string> {
    const channel = this._channel;
    if (channel === null) {
      return new Set<string>();
    }
    let sel = this._selections.get(channel);
    if (sel === undefined) {
      sel = new Set<string>();
      this._selections.set(channel, sel);
    }
    return sel;
  }

  private _onChannelDisposed(): void {
    this.follow(null);
  }

  private _onCancel = (runId: string): void => {
    const channel = this._channel;
    if (channel === null) {
      return;
    }
    channel.cancel(runId).catch((e: unknown) => {
      console.warn(`[aigc-lab] cancel of ${runId} failed`, e);
    });
  };

  private _onInterrupt = (runId: string): void => {
    const channel = this._channel;
    if (channel === null) {
      return;
    }
    channel.interrupt().catch((e: unknown) => {
      console.warn(`[aigc-lab] interrupting the kernel (run ${runId}) failed`, e);
    });
  };

  private _schedule(): void {
    if (this._frame !== 0 || this.isDisposed) {
      return;
    }
    this._frame = requestAnimationFrame(() => {
      this._frame = 0;
      this._renderNow();
    });
  }

  private _renderNow(): void {
    if (this.isDisposed) {
      return;
    }
    const channel = this._channel;
    const state: State | null = channel?.store.state ?? null;
    if (state !== null && state === this._rendered) {
      return;
    }
    this._rendered = state;
    const node = this.node;
    const kernelId = channel?.kernel.id ?? '';
    const link = state === null ? null : linkSummary(state.connection);
    const connected = link?.state === 'connected';
    const runCount = state?.order.length ?? 0;
    node.setAttribute('data-kernel-id', kernelId);
    node.setAttribute('data-connected', connected ? 'true' : 'false');
    node.setAttribute('data-link', link?.state ?? 'none');
    node.setAttribute('data-run-count', String(runCount));

    const mismatch = state?.connection.protocolMismatch ?? null;
    this._banner.hidden = mismatch === null;
    if (this._banner.textContent !== (mismatch ?? '')) {
      this._banner.textContent = mismatch ?? '';
    }

    let status: string;
    if (channel === null) {
      status = this._trans.__('no notebook kernel');
    } else if (connected) {
      const k = state?.connection.kernel;
      const pkg = k && typeof k['aigc_lab'] === 'string' ? ` · aigc_lab ${k['aigc_lab']}` : '';
      status = this._trans.__('kernel %1 · connected%2', kernelId.slice(0, 8), pkg);
    } else {
      status = this._trans.__(
        'kernel %1 · %2',
        kernelId.slice(0, 8),
        link?.text ?? this._trans.__('waiting for aigc_lab')
      );
    }
    const h = state?.connection.history ?? null;
    if (h !== null && h.state === 'pending') {
      status += this._trans.__(' · loading history…');
    } else if (h !== null && h.state === 'failed') {
      status += this._trans.__(' · history not loaded: %1', h.error ?? this._trans.__('no answer'));
    }
    if (this._statusLine.textContent !== status) {
      this._statusLine.textContent = status;
    }

    this._empty.hidden = runCount > 0;
    const emptyText =
      channel === null
        ? this._trans.__('Open a notebook to follow its kernel.')
        : this._trans.__(
            'No runs yet. Run aigc_lab code in this notebook (for example al.generate(...)) and its runs appear here.'
          );
    if (this._empty.textContent !== emptyText) {
      this._empty.textContent = emptyText;
    }

    const runs: RunState[] = state === null ? [] : runList(state);
    if (this._renderRuns(runs)) {
      // Some tokens wait for the next frame (a burst is spread over frames): render again then.
      this._rendered = null;
      this._schedule();
    }
    const selected = this._selection();
    // Forget selections of runs the store dropped (history cap, Clear).
    if (state !== null) {
      for (const id of Array.from(selected)) {
        if (state.runs[id] === undefined) {
          selected.delete(id);
        }
      }
    }
    this._history.update(runs, selected, this._focusedId(runs));
    this._renderCharts(state, selected);
  }

  private _focusedId(runs: readonly RunState[]): string | null {
    if (this._focused !== null && runs.some(r => r.id === this._focused)) {
      return this._focused;
    }
    return runs.length > 0 ? runs[runs.length - 1].id : null;
  }

  /** Update the run cards; true when a card still has tokens for a later frame. */
  private _renderRuns(runs: readonly RunState[]): boolean {
    let pending = false;
    const alive = new Set(runs.map(r => r.id));
    for (const [id, view] of this._views) {
      if (!alive.has(id)) {
        view.node.remove();
        this._views.delete(id);
      }
    }
    // A new run takes the focus back to the newest.
    if (runs.length > 0 && runs[runs.length - 1].id !== this._newest) {
      this._newest = runs[runs.length - 1].id;
      this._focused = null;
    }
    const focused = this._focusedId(runs);
    // Runs: newest first. New runs are appended at the top.
    for (const run of runs) {
      let view = this._views.get(run.id);
      if (view === undefined) {
        view = new RunView(run.id, this._onCancel, this._onInterrupt);
        view.tinting = this._settings.tinting;
        this._views.set(run.id, view);
        this._runsBox.insertBefore(view.node, this._runsBox.firstChild);
      }
      const show = run.id === focused;
      if (view.node.hidden === show) {
        view.node.hidden = !show;
      }
      // Hidden runs are brought up to date too (cheap: one append per batch), so their DOM
      // contract attributes stay true.
      view.update(run);
      pending = pending || view.pending;
    }
    return pending;
  }

  private _renderCharts(state: State | null, selected: ReadonlySet<string>): void {
    const picked =
      state === null ? { latency: [], loss: [] } : pickChartRuns(state, selected);
    // Redraw only when a charted run changed (by identity) or the selection changed.
    const key =
      picked.latency.map(r => `${r.id}:${r.tokens.length}:${r.status}`).join(',') +
      '|' +
      picked.loss.map(r => `${r.id}:${r.steps.length}:${r.evals.length}`).join(',');
    if (key === this._chartKey) {
      return;
    }
    const now = performance.now();
    const wait = this._lastChartDraw + CHART_INTERVAL_MS - now;
    if (wait > 0 && this._chartKey !== '') {
      if (this._chartTimer === null) {
        this._chartTimer = setTimeout(() => {
          this._chartTimer = null;
          this._rendered = null;
          this._schedule();
        }, wait);
      }
      return;
    }
    this._chartKey = key;
    this._lastChartDraw = now;
    const window = this._settings.chartWindow;
    this._latency.update(latencySeries(picked.latency, window));
    this._loss.update(lossSeries(picked.loss, window));
    this._loss.node.hidden = picked.loss.length === 0 && picked.latency.length > 0;
  }

  private _trans: TranslationBundle;
  private _channel: KernelChannel | null = null;
  private _unsubscribe: (() => void) | null = null;
  private _views = new Map<string, RunView>();
  private _selections = new WeakMap<KernelChannel, Set<string>>();
  private _focused: string | null = null;
  private _newest: string | null = null;
  private _rendered: State | null = null;
  private _frame = 0;
  private _settings: PanelSettings = { ...DEFAULT_SETTINGS };
  private _chartKey = '';
  private _lastChartDraw = 0;
  private _chartTimer: ReturnType<typeof setTimeout> | null = null;
  private _banner: HTMLDivElement;
  private _empty: HTMLDivElement;
  private _runsBox: HTMLDivElement;
  private _statusLine: HTMLSpanElement;
  private _charts: HTMLDivElement;
  private _latency: LiveChart;
  private _loss: LiveChart;
  private _history: HistoryTable;
}
