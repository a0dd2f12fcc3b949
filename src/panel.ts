/**
 * The AIGC Lab side panel: shows the runs of the followed kernel (the active notebook's).
 *
 * Layout: the toolbar (command buttons), a head (title, connection), the protocol banner, the focused run's card
 * (metrics strip, Stop button, chat turns, live token stream), the latency chart, the loss chart and,
 * when a run has generative eval metrics, the eval metrics chart (uPlot),
 * and the run history table whose checkboxes choose which runs the charts overlay.
 *
 * Rendering (the render path):
 * - Store changes only mark work for one `FrameScheduler` (the whole panel's): at each animation
 *   frame the panel's chrome, the cards and the charts share one budget (time and token spans),
 *   and what does not fit continues on the next frames, so a burst never makes a long frame.
 * - Only what can be seen is rendered: every card's header stays current (cheap), but only the
 *   focused card renders its token stream, and only while it is on screen (IntersectionObserver,
 *   `visibility.ts`); a card that gets hidden releases its token DOM. While the panel itself is
 *   hidden (sidebar collapsed, another tab) nothing renders; it catches up when shown.
 * - Views are kept per kernel (`ChannelViews`): switching notebooks swaps the cards' container,
 *   it does not rebuild them.
 * - Charts redraw at most every `CHART_INTERVAL_MS` while data streams, downsampled
 *   (`series.ts`), with a text summary for screen readers.
 *
 * DOM contract (used by the UI tests):
 *   #aigc-lab-panel[data-kernel-id][data-connected][data-link][data-run-count][data-theme-light]
 *     data-link: connected | waiting | comm-closed | websocket-lost | disconnected | restarting | dead | none
 *     .aigc-banner   visible when the kernel speaks a newer protocol
 *     [data-reduced-motion]  true when the user asked for reduced motion (no smooth scrolling)
 *     .aigc-runs > .aigc-run-box[data-kernel-id] > .aigc-run ...   one box per kernel, the followed one shown;
 *                  newest run first; only the focused run (default: newest) shown
 *     .aigc-chart.aigc-latency-chart / .aigc-loss-chart  [data-series-count][data-point-count]
 *     .aigc-chart.aigc-eval-chart   generative eval metrics (one series per metric per run); hidden
 *                  unless some run has `train.eval.metrics`
 *     .aigc-history tr.aigc-history-row[data-run-id][data-selected]
 *     .aigc-toolbar   the plugin's command buttons (src/toolbar.ts): button.aigc-stop-run,
 *                     button.aigc-load-history, button.aigc-export-csv, button.aigc-clear
 *     .aigc-live[role=status]   the polite live region (src/announcer.ts)
 */

import { ITranslator, TranslationBundle } from '@jupyterlab/translation';
import { PanelLayout, Widget } from '@lumino/widgets';

import { Message } from '@lumino/messaging';

import { KernelChannel } from './channel';
import {
  CHART_MAX_POINTS,
  evalMetricSeries,
  evalSummary,
  historyCsv,
  historyRows,
  latencySeries,
  latencySummary,
  lossSeries,
  lossSummary,
  pickChartRuns
} from './series';
import { translationBundle } from './i18n';
import { Budget, FrameScheduler } from './scheduler';
import { Action, DEFAULT_MAX_TOKENS, RunState, State, linkSummary, runList } from './store';
import { LiveChart, prefersReducedMotion } from './views/chart';
import { downloadText } from './views/download';
import { HistoryTable } from './views/history';
import { RunView } from './views/runview';
import { VisibilityWatch } from './visibility';

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
  /**
   * Tokens kept per run (setting `tokensPerRun`, default `DEFAULT_MAX_TOKENS`); beyond it the
   * oldest are dropped and the card says so (the kernel keeps the full text).
   */
  tokensPerRun: number;
}

/** The views of one kernel's runs, kept while the panel follows another kernel. */
interface ChannelViews {
  /** The container of this kernel's cards (in `.aigc-runs` while followed). */
  box: HTMLDivElement;
  views: Map<string, RunView>;
  /** Runs selected for the charts' overlay. */
  selection: Set<string>;
  /** The run whose card is shown (null: the newest). */
  focused: string | null;
  newest: string | null;
}

export const DEFAULT_SETTINGS: PanelSettings = {
  historySize: 100,
  tinting: true,
  chartWindow: 0,
  tokensPerRun: DEFAULT_MAX_TOKENS
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
    // Generative eval metrics (train.eval.metrics): shown only when some run has them.
    this._evalMetrics = new LiveChart({
      className: 'aigc-eval-chart',
      title: trans.__('Eval metrics'),
      xLabel: trans.__('step'),
      yLabel: trans.__('score'),
      height: 150
    });
    this._evalMetrics.emptyText = trans.__('No eval metrics yet.');
    this._evalMetrics.node.hidden = true;
    this._charts.append(this._latency.node, this._loss.node, this._evalMetrics.node);

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
    this._watchMotion();
    this._scheduler.paused = !this.isVisible; // nothing renders until the panel is shown
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
    for (const cv of this._cache.values()) {
      for (const view of cv.views.values()) {
        view.tinting = value.tinting;
      }
    }
    this._channel?.store.dispatch(this._limits());
    this._chartKey = '';
    this._invalidate();
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
    this._invalidate();
  }

  /** Show `runId`'s card (null: the newest run). */
  focusRun(runId: string | null): void {
    if (this._cv !== null) {
      this._cv.focused = runId;
    }
    this._invalidate();
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
    if (this._cv !== null) {
      this._cv.focused = null;
    }
  }

  /** Re-read the theme's colours (JupyterLab theme changed). */
  retheme(): void {
    const light = document.body.getAttribute('data-jp-theme-light') !== 'false';
    this.node.setAttribute('data-theme-light', light ? 'true' : 'false');
    this._latency.retheme();
    this._loss.retheme();
    this._evalMetrics.retheme();
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
    // The kernel left keeps its cards, and its shown card keeps its token DOM (its hidden cards
    // hold none): one stream per kernel, whose closed chunks are skipped by style and layout
    // while off screen (`content-visibility: auto`), so coming back costs no re-render; a
    // re-render of thousands of spans was a dozen busy frames after every switch.
    this._channel = channel;
    // A different kernel: show its views (kept from the last time it was followed, if it was).
    this._cv = channel === null ? null : this._viewsFor(channel);
    this._runsBox.replaceChildren(...(this._cv === null ? [] : [this._cv.box]));
    this._history.show(this._cv);
    if (this._cv !== null) {
      for (const view of this._cv.views.values()) {
        this._visibility.reset(view.node); // back in the page: on screen until told otherwise
      }
    }
    this._rendered = null;
    this._chartKey = '';
    if (channel !== null) {
      channel.store.dispatch(this._limits());
      this._unsubscribe = channel.store.subscribe(() => this._invalidate());
    }
    this._renderNow();
  }

  /** The render scheduler of the whole panel (benchmarks and tests read its counters). */
  get scheduler(): FrameScheduler {
    return this._scheduler;
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this._updateActive();
  }

  protected onAfterHide(msg: Message): void {
    super.onAfterHide(msg);
    this._updateActive();
  }

  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    this._updateActive();
  }

  protected onAfterDetach(msg: Message): void {
    super.onAfterDetach(msg);
    this._updateActive();
  }

  /** Render only while the panel can be seen; catch up on everything when it is shown again. */
  private _updateActive(): void {
    const active = this.isVisible;
    if (active) {
      this._rendered = null;
      this._chartKey = '';
      this._invalidate();
    }
    this._scheduler.paused = !active;
  }

  /** `data-reduced-motion` follows the user's `prefers-reduced-motion` (CSS keys on it). */
  private _watchMotion(): void {
    const set = () =>
      this.node.setAttribute('data-reduced-motion', prefersReducedMotion() ? 'true' : 'false');
    set();
    if (typeof matchMedia === 'function') {
      const query = matchMedia('(prefers-reduced-motion: reduce)');
      if (typeof query.addEventListener === 'function') {
        query.addEventListener('change', set);
        this._motionOff = () => query.removeEventListener('change', set);
      }
    }
  }

  private _limits(): Action {
    return {
      type: 'limits',
      maxRuns: this._settings.historySize,
      maxTokens: this._settings.tokensPerRun
    };
  }

  /** The views of `channel`'s runs, created on first use, forgotten when the channel goes. */
  private _viewsFor(channel: KernelChannel): ChannelViews {
    let cv = this._cache.get(channel);
    if (cv === undefined) {
      const box = document.createElement('div');
      box.className = 'aigc-run-box';
      box.setAttribute('data-kernel-id', channel.kernel.id);
      cv = { box, views: new Map(), selection: new Set(), focused: null, newest: null };
      this._cache.set(channel, cv);
      channel.disposed.connect(this._onChannelDisposed, this);
    }
    return cv;
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._unsubscribe?.();
    this._scheduler.dispose();
    this._visibility.dispose();
    this._motionOff?.();
    for (const cv of this._cache.values()) {
      for (const view of cv.views.values()) {
        view.release();
      }
    }
    this._cache.clear();
    if (this._chartTimer !== null) {
      clearTimeout(this._chartTimer);
    }
    this._latency.dispose();
    this._loss.dispose();
    this._evalMetrics.dispose();
    super.dispose();
  }

  private _selection(): Set<string> {
    return this._cv === null ? new Set<string>() : this._cv.selection;
  }

  private _onChannelDisposed(channel: KernelChannel): void {
    const cv = this._cache.get(channel);
    if (cv !== undefined) {
      for (const view of cv.views.values()) {
        view.release();
        this._visibility.unobserve(view.node);
        this._scheduler.unmark(`run:${view.runId}`);
      }
      this._cache.delete(channel);
      this._history.forget(cv);
    }
    if (channel === this._channel) {
      this.follow(null);
    }
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

  /** Something changed: render the panel at the next frame (within the frame's budget). */
  private _invalidate(): void {
    this._rendered = null; // a focus, selection or setting change leaves the state as it was
    if (!this.isDisposed) {
      this._scheduler.mark('panel', this._panelTask);
    }
  }

  private _panelTask = (budget: Budget): boolean => {
    this._renderNow(budget);
    return true;
  };

  /** A card's visibility changed (scrolled into or out of view): render what it now needs. */
  private _onCardVisibility = (): void => {
    this._rendered = null;
    this._invalidate();
  };

  /**
   * Render the panel's chrome, the cards' headers and the history table now, and mark the token
   * stream of the card on screen and the charts for this frame's remaining budget. Nothing while
   * the panel is hidden (it catches up when shown).
   */
  private _renderNow(budget: Budget | null = null): void {
    if (this.isDisposed) {
      return;
    }
    if (!this.isVisible) {
      this._invalidate(); // runs once the scheduler resumes (shown)
      return;
    }
    const channel = this._channel;
    const state: State | null = channel?.store.state ?? null;
    if (state === this._rendered && channel === this._renderedChannel) {
      return;
    }
    this._rendered = state;
    this._renderedChannel = channel;
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
    this._syncCards(runs, budget);
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
    this._scheduler.mark('charts', this._chartsTask);
  }

  private _focusedId(runs: readonly RunState[]): string | null {
    const focused = this._cv?.focused ?? null;
    if (focused !== null && runs.some(r => r.id === focused)) {
      return focused;
    }
    return runs.length > 0 ? runs[runs.length - 1].id : null;
  }

  /**
   * Bring the followed kernel's cards in line with its runs: create and remove cards, show the
   * focused one (hide and release the others), update every changed header, and mark the token
   * stream of the focused card for rendering when it is on screen.
   */
  private _syncCards(runs: readonly RunState[], budget: Budget | null): void {
    const cv = this._cv;
    if (cv === null) {
      return;
    }
    const alive = new Set(runs.map(r => r.id));
    for (const [id, view] of cv.views) {
      if (!alive.has(id)) {
        view.release();
        view.node.remove();
        this._visibility.unobserve(view.node);
        this._scheduler.unmark(`run:${id}`);
        cv.views.delete(id);
      }
    }
    // A new run takes the focus back to the newest.
    if (runs.length > 0 && runs[runs.length - 1].id !== cv.newest) {
      cv.newest = runs[runs.length - 1].id;
      cv.focused = null;
    }
    const focused = this._focusedId(runs);
    // Runs: newest first. Cards are placed in order (a replayed older run goes below newer ones).
    let next: ChildNode | null = null;
    for (const run of runs) {
      let view = cv.views.get(run.id);
      if (view === undefined) {
        view = new RunView(run.id, this._onCancel, this._onInterrupt, downloadText, this._trans);
        view.tinting = this._settings.tinting;
        cv.views.set(run.id, view);
        this._visibility.observe(view.node);
      }
      if (view.node.nextSibling !== next || view.node.parentNode !== cv.box) {
        cv.box.insertBefore(view.node, next);
      }
      next = view.node;
      const show = run.id === focused;
      if (view.node.hidden === show) {
        view.node.hidden = !show;
        if (show) {
          this._visibility.reset(view.node);
        }
      }
      view.updateHeader(run);
      if (!show) {
        view.release(); // nothing rendered for a hidden card; rebuilt when shown again
      } else if (view.stale && this._visibility.isVisible(view.node)) {
        // Within this frame's budget right away (no frame's delay for a live stream); what does
        // not fit continues as the card's own task on the next frames.
        if (budget !== null && !budget.exhausted) {
          view.update(run, budget);
        }
        if (view.stale) {
          this._scheduler.mark(`run:${run.id}`, this._cardTask(run.id));
        }
      }
    }
  }

  /** The task that renders card `id`'s token stream within the frame's budget. */
  private _cardTask(id: string): (budget: Budget) => boolean {
    return (budget: Budget): boolean => {
      const run = this._channel?.store.state.runs[id];
      const view = this._cv?.views.get(id);
      if (run === undefined || view === undefined || view.node.hidden) {
        return true;
      }
      if (!this._visibility.isVisible(view.node)) {
        return true; // scrolled out of view: rendered when it comes back (`_onCardVisibility`)
      }
      view.update(run, budget);
      return !view.stale;
    };
  }

  private _chartsTask = (): boolean => {
    const state = this._channel?.store.state ?? null;
    this._renderCharts(state, this._selection());
    return true;
  };

  /** Redraw the charts if what they show changed and the last redraw is old enough. */
  private _renderCharts(state: State | null, selected: ReadonlySet<string>): void {
    const picked =
      state === null ? { latency: [], loss: [], evals: [] } : pickChartRuns(state, selected);
    // Redraw only when a charted run changed (by identity) or the selection changed.
    const key =
      picked.latency.map(r => `${r.id}:${r.tokens.length}:${r.status}`).join(',') +
      '|' +
      picked.loss.map(r => `${r.id}:${r.steps.length}:${r.evals.length}`).join(',') +
      '|' +
      picked.evals.map(r => `${r.id}:${r.evals.length}`).join(',');
    if (key === this._chartKey) {
      return;
    }
    const now = performance.now();
    const wait = this._lastChartDraw + CHART_INTERVAL_MS - now;
    if (wait > 0 && this._chartKey !== '') {
      if (this._chartTimer === null) {
        this._chartTimer = setTimeout(() => {
          this._chartTimer = null;
          this._scheduler.mark('charts', this._chartsTask);
        }, wait);
      }
      return;
    }
    this._chartKey = key;
    this._lastChartDraw = now;
    const window = this._settings.chartWindow;
    const trans = this._trans;
    this._latency.update(latencySeries(picked.latency, window, CHART_MAX_POINTS, trans));
    this._loss.update(lossSeries(picked.loss, window, CHART_MAX_POINTS, trans));
    this._latency.summary = latencySummary(picked.latency, trans);
    this._loss.summary = lossSummary(picked.loss, trans);
    this._loss.node.hidden = picked.loss.length === 0 && picked.latency.length > 0;
    // Shown first, then drawn: a hidden chart has no width to draw in.
    this._evalMetrics.node.hidden = picked.evals.length === 0;
    this._evalMetrics.update(evalMetricSeries(picked.evals, window));
    this._evalMetrics.summary = evalSummary(picked.evals, trans);
  }

  private _trans: TranslationBundle;
  private _channel: KernelChannel | null = null;
  private _unsubscribe: (() => void) | null = null;
  /** The followed kernel's views (one of `_cache`), or null. */
  private _cv: ChannelViews | null = null;
  private _cache = new Map<KernelChannel, ChannelViews>();
  private _scheduler = new FrameScheduler();
  private _visibility = new VisibilityWatch(this._onCardVisibility);
  private _motionOff: (() => void) | null = null;
  private _rendered: State | null = null;
  private _renderedChannel: KernelChannel | null = null;
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
  private _evalMetrics: LiveChart;
  private _history: HistoryTable;
}
