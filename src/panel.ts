/**
 * The AIGC Lab side panel: shows the runs of the followed kernel (the active notebook's).
 *
 * Store changes only schedule a render; rendering happens at most once per animation frame and
 * touches only runs whose state object changed, so a fast token stream never blocks the page.
 *
 * DOM contract (used by the UI tests):
 *   #aigc-lab-panel[data-kernel-id][data-connected][data-run-count]
 *     .aigc-banner   visible when the kernel speaks a newer protocol
 *     .aigc-runs > .aigc-run ...   newest run first
 */

import { Widget } from '@lumino/widgets';

import { KernelChannel } from './channel';
import { State, runList } from './store';
import { RunView } from './views/runview';

export const PANEL_ID = 'aigc-lab-panel';

export class AigcLabPanel extends Widget {
  constructor() {
    super();
    this.id = PANEL_ID;
    this.addClass('aigc-lab-panel');
    this.title.label = 'AIGC Lab';
    this.title.caption = 'AIGC Lab: live runs of the active notebook’s kernel';

    const node = this.node;
    node.setAttribute('data-kernel-id', '');
    node.setAttribute('data-connected', 'false');
    node.setAttribute('data-run-count', '0');

    const head = document.createElement('div');
    head.className = 'aigc-panel-head';
    const title = document.createElement('span');
    title.className = 'aigc-panel-title';
    title.textContent = 'AIGC Lab';
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

    node.append(head, this._banner, this._empty, this._runsBox);
    this._renderNow();
  }

  /** The channel being shown, or null when no notebook kernel is followed. */
  get channel(): KernelChannel | null {
    return this._channel;
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
    if (channel !== null) {
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
    super.dispose();
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
    const connected = state?.connection.connected ?? false;
    const runCount = state?.order.length ?? 0;
    node.setAttribute('data-kernel-id', kernelId);
    node.setAttribute('data-connected', connected ? 'true' : 'false');
    node.setAttribute('data-run-count', String(runCount));

    const mismatch = state?.connection.protocolMismatch ?? null;
    this._banner.hidden = mismatch === null;
    if (this._banner.textContent !== (mismatch ?? '')) {
      this._banner.textContent = mismatch ?? '';
    }

    let status: string;
    if (channel === null) {
      status = 'no notebook kernel';
    } else if (connected) {
      const k = state?.connection.kernel;
      const pkg = k && typeof k['aigc_lab'] === 'string' ? ` · aigc_lab ${k['aigc_lab']}` : '';
      status = `kernel ${kernelId.slice(0, 8)} · connected${pkg}`;
    } else {
      status = `kernel ${kernelId.slice(0, 8)} · waiting for aigc_lab`;
    }
    if (this._statusLine.textContent !== status) {
      this._statusLine.textContent = status;
    }

    this._empty.hidden = runCount > 0;
    const emptyText =
      channel === null
        ? 'Open a notebook to follow its kernel.'
        : 'No runs yet. Run aigc_lab code in this notebook (for example al.generate(...)) and its runs appear here.';
    if (this._empty.textContent !== emptyText) {
      this._empty.textContent = emptyText;
    }

    if (state === null) {
      return;
    }
    // Runs: newest first. New runs are only ever added (the store never removes one).
    for (const run of runList(state)) {
      let view = this._views.get(run.id);
      if (view === undefined) {
        view = new RunView(run.id, this._onCancel);
        this._views.set(run.id, view);
        this._runsBox.insertBefore(view.node, this._runsBox.firstChild);
      }
      view.update(run);
    }
  }

  private _channel: KernelChannel | null = null;
  private _unsubscribe: (() => void) | null = null;
  private _views = new Map<string, RunView>();
  private _rendered: State | null = null;
  private _frame = 0;
  private _banner: HTMLDivElement;
  private _empty: HTMLDivElement;
  private _runsBox: HTMLDivElement;
  private _statusLine: HTMLSpanElement;
}
