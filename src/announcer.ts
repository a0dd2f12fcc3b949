/**
 * The panel's polite live region: says, in words, when a run of the followed kernel starts and
 * how it ends, and what became of a cancel request (acknowledged, refused, failed), so a screen
 * reader user hears what sighted users see change on the cards.
 *
 * Only what happens live is said: runs replayed from the kernel's history (a reload, a
 * re-attach) started before the panel followed the kernel and stay quiet.
 *
 * DOM contract: `.aigc-live[role=status][aria-live=polite]` (visually hidden), its text the
 * latest announcement.
 */

import { TranslationBundle } from '@jupyterlab/translation';

import { RunState, State, Store } from './store';

/** A run whose `run.start` stamp is older than this when it arrives is a replay: not said. */
export const LIVE_WINDOW_MS = 10_000;

/** Announcements made in one turn of the event loop are said together. */
const FLUSH_MS = 50;

export class RunAnnouncer {
  constructor(trans: TranslationBundle, now: () => number = Date.now) {
    this._trans = trans;
    this._now = now;
    this.node = document.createElement('div');
    this.node.className = 'aigc-live aigc-sr-only';
    this.node.setAttribute('role', 'status');
    this.node.setAttribute('aria-live', 'polite');
    this.node.setAttribute('aria-atomic', 'true');
  }

  /** The live region (the panel places it in its DOM). */
  readonly node: HTMLDivElement;

  /** Announce the runs of `channel`'s store from now on (null: nothing). */
  follow(channel: { readonly store: Store } | null): void {
    this._unsubscribe?.();
    this._unsubscribe = null;
    this._live.clear();
    if (channel !== null) {
      // Runs running now are live; their end will be said.
      const state = channel.store.state;
      for (const id of state.order) {
        if (state.runs[id]?.status === 'running') {
          this._live.add(id);
        }
      }
      this._unsubscribe = channel.store.subscribe((next, previous) =>
        this._onChange(next, previous)
      );
    }
  }

  dispose(): void {
    this._unsubscribe?.();
    this._unsubscribe = null;
    if (this._timer !== null) {
      clearTimeout(this._timer);
      this._timer = null;
    }
  }

  private _onChange(state: State, previous: State): void {
    for (const id of state.order) {
      const run = state.runs[id];
      const prev = previous.runs[id];
      if (run === undefined || run === prev) {
        continue; // unchanged (the reducer keeps an unchanged run's identity)
      }
      if ((prev === undefined || prev.placeholder) && !run.placeholder) {
        if (run.t0 !== null && this._now() - run.t0 <= LIVE_WINDOW_MS) {
          this._live.add(id);
          if (run.status === 'running') {
            this._say(
              this._trans.__('%1 run %2 started on %3.', this._kind(run), id, this._model(run))
            );
          }
        }
      }
      // the answer to a cancel the user asked for is said whatever the run's origin
      const cancel = run.cancel;
      if (cancel !== null && cancel.state !== 'pending' && prev?.cancel?.state !== cancel.state) {
        this._say(this._cancelResult(run));
      }
      if (
        this._live.has(id) &&
        prev !== undefined &&
        prev.status === 'running' &&
        run.status !== 'running'
      ) {
        this._say(this._ended(run));
        this._live.delete(id);
      }
    }
  }

  private _kind(run: RunState): string {
    switch (run.kind) {
      case 'generate':
        return this._trans.__('Generation');
      case 'train':
        return this._trans.__('Training');
      case 'bench':
        return this._trans.__('Benchmark');
      default:
        return this._trans.__('A');
    }
  }

  private _model(run: RunState): string {
    return run.model === null ? this._trans.__('an unknown model') : run.model.name;
  }

  private _ended(run: RunState): string {
    const kind = this._kind(run);
    switch (run.status) {
      case 'ok': {
        const rate = run.metrics?.tok_s;
        return typeof rate === 'number' && Number.isFinite(rate)
          ? this._trans.__(
              '%1 run %2 finished: %3 tokens per second.',
              kind,
              run.id,
              rate.toFixed(1)
            )
          : this._trans.__('%1 run %2 finished.', kind, run.id);
      }
      case 'cancelled':
        return this._trans.__('%1 run %2 was cancelled.', kind, run.id);
      case 'error':
        return this._trans.__('%1 run %2 failed: %3', kind, run.id, run.error ?? '');
      default:
        return this._trans.__('%1 run %2 was interrupted.', kind, run.id);
    }
  }

  private _cancelResult(run: RunState): string {
    const c = run.cancel;
    if (c === null || c.state === 'acknowledged') {
      return this._trans.__('Cancel of run %1 acknowledged by the kernel.', run.id);
    }
    if (c.state === 'refused') {
      return this._trans.__(
        'Cancel of run %1 refused: %2. Interrupt the kernel to stop it.',
        run.id,
        c.error ?? ''
      );
    }
    return this._trans.__('Cancel of run %1 failed: %2', run.id, c.error ?? '');
  }

  /** Queue `text`; what was queued in the same turn is said as one announcement. */
  private _say(text: string): void {
    this._queue.push(text);
    if (this._timer === null) {
      this._timer = setTimeout(() => {
        this._timer = null;
        const message = this._queue.splice(0).join(' ');
        if (this.node.textContent !== message) {
          this.node.textContent = message;
        }
      }, FLUSH_MS);
    }
  }

  private _trans: TranslationBundle;
  private _now: () => number;
  private _live = new Set<string>();
  private _queue: string[] = [];
  private _timer: ReturnType<typeof setTimeout> | null = null;
  private _unsubscribe: (() => void) | null = null;
}
