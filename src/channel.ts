/**
 * The comm side of the panel: one `KernelChannel` per kernel connection.
 *
 * The kernel opens the `aigc_lab` comm (docs/protocol.md); we register the target on every kernel
 * the notebook tracker shows, validate everything that arrives with `parseMessage`, feed valid
 * messages to the connection's `Store`, and send `cancel` requests that resolve on the matching
 * `ack`.
 *
 * Restarts: in @jupyterlab/services 7 a restart keeps the same `KernelConnection` object and its
 * comm-target registry, but disposes every open comm (`_clearKernelState`) without calling their
 * `onClose`. So we watch `statusChanged` ('restarting' / 'autorestarting' / 'dead'), mark running
 * runs interrupted, drop the comm and re-register the target (idempotent: the registry is a map by
 * target name). The restart shows until the websocket services reopens for it is up and the new
 * kernel reports a live status on it (the old kernel's last statuses, on the old socket, do not end
 * it). A changed kernel (`sessionContext.kernelChanged`) is a new connection and gets its own channel.
 *
 * Page reload: a comm the kernel opened before this page existed is unknown to the new kernel
 * connection, and `comm_msg` for unknown comm ids is dropped silently by services. On attach we
 * ask the kernel for open `aigc_lab` comms (`comm_info_request`) and re-attach to them with
 * `createComm(target, existingId)`, the way ipywidgets reconnects widget comms.
 *
 * Busy kernels: requests (`history`, `cancel`) and the comm lookup go through `SideShell`, the
 * panel's own subshell and the control channel, so they are answered while a cell runs on the
 * main shell (Run All, a long foreground cell). Every request times out with a message
 * (`REQUEST_TIMEOUT_MS`); a late answer still updates the store.
 */

import { ISessionContext } from '@jupyterlab/apputils';
import { Kernel, KernelMessage } from '@jupyterlab/services';
import { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import { AckMessage, COMM_TARGET, cancelMessage, historyMessage, parseMessage } from './protocol';
import { SideShell } from './sideshell';
import { Store } from './store';

/** How long a request waits for its `ack` before it is reported as failed. */
export const REQUEST_TIMEOUT_MS = 10000;

let requestCounter = 0;

/** A request id unique within this page (and, with the random part, across pages). */
export function newRequestId(): string {
  requestCounter += 1;
  const rnd = Math.floor(Math.random() * 0xffffffff)
    .toString(16)
    .padStart(8, '0');
  return `req-${Date.now().toString(36)}-${rnd}-${requestCounter}`;
}

interface PendingRequest {
  run: string;
  resolve: (ack: AckMessage) => void;
  reject: (error: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

/** Where incoming data goes; split out of `KernelChannel` so it can be tested without a kernel. */
export class MessageSink {
  constructor(readonly store: Store) {}

  /**
   * Validate one comm payload and dispatch it. Returns the ack it carried, if any.
   * Malformed payloads are logged and ignored, never acted on.
   */
  receive(data: unknown): AckMessage | null {
    const result = parseMessage(data);
    if (!result.ok) {
      if (result.kind === 'newer-version' && result.version !== undefined) {
        console.warn(`[aigc-lab] ${result.reason}`, data);
        this.store.dispatch({
          type: 'protocol.mismatch',
          version: result.version,
          reason: result.reason
        });
      } else {
        console.warn(`[aigc-lab] ignored malformed message: ${result.reason}`, data);
        this.store.dispatch({ type: 'malformed', reason: result.reason });
      }
      return null;
    }
    const message = result.message;
    if (message.type === 'cancel' || message.type === 'history') {
      console.warn(
        `[aigc-lab] ignored malformed message: ${message.type} is a panel → kernel message`,
        data
      );
      this.store.dispatch({ type: 'malformed', reason: `${message.type} sent by the kernel` });
      return null;
    }
    this.store.dispatch({ type: 'message', message });
    return message.type === 'ack' ? message : null;
  }
}

export class KernelChannel implements IDisposable {
  constructor(kernel: Kernel.IKernelConnection) {
    this.kernel = kernel;
    this.store = new Store();
    this._sink = new MessageSink(this.store);
    this._side = new SideShell(kernel);
    this._register();
    kernel.statusChanged.connect(this._onStatus, this);
    kernel.connectionStatusChanged.connect(this._onConnectionStatus, this);
    kernel.disposed.connect(this._onKernelDisposed, this);
    void this._reattach();
  }

  readonly kernel: Kernel.IKernelConnection;
  readonly store: Store;

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  get disposed(): ISignal<this, void> {
    return this._disposed;
  }

  /** Whether a comm to the kernel's aigc_lab bridge is open. */
  get hasComm(): boolean {
    return this._comm !== null && !this._comm.isDisposed;
  }

  /**
   * Ask the kernel to stop `run`. Resolves with the kernel's `ack` (check `ack.ok`); rejects when
   * the request cannot be sent or can no longer be answered (comm closed, kernel restarted).
   * The store tracks the request: `run.cancel.state` is 'pending', then 'acknowledged' / 'refused'
   * / 'failed'.
   */
  cancel(run: string): Promise<AckMessage> {
    const id = newRequestId();
    this.store.dispatch({ type: 'cancel.requested', run, id });
    const comm = this._comm;
    if (comm === null || comm.isDisposed) {
      const error = 'not connected to the kernel (no aigc_lab comm open)';
      this.store.dispatch({ type: 'cancel.failed', run, id, error });
      return Promise.reject(new Error(error));
    }
    return new Promise<AckMessage>((resolve, reject) => {
      const timer = setTimeout(
        () =>
          this._fail(
            id,
            `no answer from the kernel within ${REQUEST_TIMEOUT_MS / 1000} s (is it busy or stuck?)`
          ),
        REQUEST_TIMEOUT_MS
      );
      this._pending.set(id, { run, resolve, reject, timer });
      this._send(comm, { ...cancelMessage(run, id) }).catch((e: unknown) => {
        this._fail(id, `could not send the cancel request: ${String(e)}`);
      });
    });
  }

  /**
   * Ask the kernel to replay its recorded runs (`history`, docs/protocol.md). The kernel acks,
   * then sends the runs as ordinary messages; tokens and steps already shown are ignored by the
   * store. Returns false when no comm is open.
   */
  requestHistory(): boolean {
    const id = newRequestId();
    this._lostSinceHistory = false;
    this.store.dispatch({ type: 'history.requested', id });
    const comm = this._comm;
    if (comm === null || comm.isDisposed) {
      this.store.dispatch({ type: 'history.failed', id, error: 'no aigc_lab comm open' });
      return false;
    }
    clearTimeout(this._historyTimer);
    this._historyTimer = setTimeout(() => {
      this.store.dispatch({
        type: 'history.failed',
        id,
        error: `no answer from the kernel within ${REQUEST_TIMEOUT_MS / 1000} s`
      });
    }, REQUEST_TIMEOUT_MS);
    this._send(comm, { ...historyMessage(id) }).catch((e: unknown) => {
      this.store.dispatch({ type: 'history.failed', id, error: String(e) });
    });
    return true;
  }

  /** Interrupt the kernel (what a refused or unanswered cancel offers). */
  interrupt(): Promise<void> {
    return this.kernel.interrupt();
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    this._failAll('the panel stopped following this kernel');
    clearTimeout(this._historyTimer);
    this._side.dispose();
    if (!this.kernel.isDisposed) {
      this.kernel.removeCommTarget(COMM_TARGET, this._onCommOpen);
    }
    this._comm = null;
    this._disposed.emit();
    Signal.clearData(this);
  }

  // -- comm handling ---------------------------------------------------------------------------

  private _register(): void {
    if (this.kernel.isDisposed) {
      return;
    }
    // Idempotent: the registry maps a target name to one callback.
    this.kernel.registerCommTarget(COMM_TARGET, this._onCommOpen);
  }

  private _onCommOpen = (comm: Kernel.IComm, msg: KernelMessage.ICommOpenMsg): void => {
    if (this._isDisposed) {
      return;
    }
    const fresh = this._attach(comm);
    const data: unknown = msg.content.data;
    // An empty open payload carries nothing; hello normally travels as the open data.
    if (!(typeof data === 'object' && data !== null && Object.keys(data).length === 0)) {
      this._receive(data);
    }
    // The kernel streams live events only to a panel that has made a request (docs/protocol.md,
    // "Who is listening"); this request also replays what ran before the comm reached us.
    if (fresh && this.store.state.connection.protocolMismatch === null) {
      this.requestHistory();
    }
  };

  /**
   * Take `comm` as this channel's comm; true when it is a new comm (ask for the replay then), false
   * when it is the one already held. The lookup (`_lookUpComms`, on control or the shell) can answer
   * before the comm's comm_open arrives on IOPub; services then hands over a new object for the
   * same comm. One replay per attach: a second one, served after a live run, re-sends all of it.
   */
  private _attach(comm: Kernel.IComm): boolean {
    const fresh = this._comm === null || this._comm.commId !== comm.commId;
    this._comm = comm;
    comm.onMsg = (m: KernelMessage.ICommMsgMsg) => {
      if (!this._isDisposed) {
        this._receive(m.content.data);
      }
    };
    comm.onClose = () => {
      if (this._comm === comm) {
        this._comm = null;
        this._failAll('the aigc_lab comm closed');
        this.store.dispatch({ type: 'comm.closed' });
      }
    };
    return fresh;
  }

  /**
   * Send a request on `comm`: on the panel's subshell when the kernel has one (answered while a
   * cell runs), else as an ordinary comm message (answered when the main shell is free).
   */
  private async _send(
    comm: Kernel.IComm,
    data: KernelMessage.ICommMsgMsg['content']['data']
  ): Promise<void> {
    const subshellId = await this._side.subshell();
    if (comm.isDisposed || this._comm !== comm) {
      throw new Error('the aigc_lab comm closed');
    }
    if (subshellId !== null) {
      this._side.sendCommMsg(comm.commId, data, subshellId);
    } else {
      comm.send(data).done.catch(() => undefined);
    }
  }

  private _receive(data: unknown): void {
    const ack = this._sink.receive(data);
    if (ack !== null) {
      if (ack.id === this.store.state.connection.history?.id) {
        clearTimeout(this._historyTimer);
      }
      const pending = this._pending.get(ack.id);
      if (pending !== undefined) {
        this._pending.delete(ack.id);
        clearTimeout(pending.timer);
        pending.resolve(ack);
      }
    }
  }

  /**
   * Re-attach to an aigc_lab comm the kernel opened before this page (or this kernel connection)
   * existed. Asked on the control channel, so a cell running on the main shell does not delay it.
   */
  private _reattach(): Promise<void> {
    // One lookup at a time (construction and the websocket's 'connected' often coincide).
    if (this._reattaching === null) {
      this._reattaching = this._lookUpComms().finally(() => {
        this._reattaching = null;
      });
    }
    return this._reattaching;
  }

  private async _lookUpComms(): Promise<void> {
    try {
      const comms = await this._side.commInfo(COMM_TARGET);
      if (this._isDisposed || this.kernel.isDisposed) {
        return;
      }
      for (const [commId, info] of Object.entries(comms)) {
        if (info.target_name !== COMM_TARGET || this.kernel.hasComm(commId)) {
          continue;
        }
        if (!this._attach(this.kernel.createComm(COMM_TARGET, commId))) {
          continue;
        }
        this.store.dispatch({ type: 'comm.reattached' });
        // Runs that happened before this page (or panel) existed: ask the kernel to replay them.
        this.requestHistory();
      }
    } catch (e) {
      // No kernel yet, or a kernel without comm_info: nothing to re-attach to.
      console.debug('[aigc-lab] comm_info_request failed', e);
    }
  }

  private _onStatus(_: Kernel.IKernelConnection, status: KernelMessage.Status): void {
    // A restart ends when the websocket services reopens for it is up and the new kernel reports a live
    // status on it. Before that, the old kernel's last statuses still arrive on the old socket (the busy /
    // idle of the shutdown the server sends it): they do not end the restart. After the reopen the new
    // kernel reports 'starting' until it is ready: still down.
    const down =
      status === 'restarting' ||
      status === 'autorestarting' ||
      status === 'dead' ||
      (this._down && (status === 'starting' || !this._reopened));
    if (status === 'dead') {
      this.store.dispatch({ type: 'link', link: 'dead' });
    } else if (down) {
      this.store.dispatch({ type: 'link', link: 'restarting' });
    } else if (status !== 'unknown' && this.kernel.connectionStatus === 'connected') {
      this.store.dispatch({ type: 'link', link: 'ok' });
    }
    if (down && !this._down) {
      this._down = true;
      this._reopened = false;
      this._comm = null; // services disposes the comm without calling onClose
      this._side.reset();
      this._failAll('the kernel restarted');
      this.store.dispatch({ type: 'kernel.restarted' });
      this._register();
    } else if (!down && status !== 'unknown') {
      if (this._down) {
        this._register();
      }
      this._down = false;
    }
  }

  private _onConnectionStatus(_: Kernel.IKernelConnection, status: Kernel.ConnectionStatus): void {
    // While the kernel restarts, its websocket reconnecting is part of the restart: the link stays
    // 'restarting' until the kernel reports a live status (otherwise one frame can show only the lost socket).
    if (this._down) {
      // the restart's own reconnect: once it is up, the next live status ends the restart
      this._reopened = status === 'connected';
    }
    if (this.kernel.status !== 'dead' && (!this._down || status === 'disconnected')) {
      // 'connecting': services is retrying; 'disconnected': it stopped (a deliberate close, or out of
      // retries; during a restart too: nothing will end the restart then)
      const link =
        status === 'connected' ? 'ok' : status === 'connecting' ? 'websocket-lost' : 'disconnected';
      this.store.dispatch({ type: 'link', link });
    }
    if (status !== 'connected') {
      this._lostSinceHistory = true;
    }
    if (status === 'connected') {
      this._side.retry();
      if (!this.hasComm && !this._down) {
        // After a websocket reconnect, pick up a comm we may have missed.
        void this._reattach();
      } else if (
        this.hasComm &&
        this._lostSinceHistory &&
        ['pending', 'failed'].includes(this.store.state.connection.history?.state ?? '')
      ) {
        // The replay's answer may have been lost with the socket: ask again (replays are idempotent).
        // Only then: one history request per attach, however often 'connected' is reported.
        this.requestHistory();
      }
    }
  }

  private _onKernelDisposed(): void {
    if (this.kernel.status === 'dead') {
      // JupyterLab disposes a dead kernel's connection. Keep showing its runs, marked dead, until the
      // notebook gets another kernel (the manager drops this channel then): "no notebook kernel" would hide
      // what happened.
      this._failAll('the kernel died');
      this._comm = null;
      this._side.reset();
      this.store.dispatch({ type: 'link', link: 'dead' });
      return;
    }
    this.dispose();
  }

  private _fail(id: string, error: string): void {
    const pending = this._pending.get(id);
    if (pending === undefined) {
      return;
    }
    this._pending.delete(id);
    clearTimeout(pending.timer);
    this.store.dispatch({ type: 'cancel.failed', run: pending.run, id, error });
    pending.reject(new Error(error));
  }

  private _failAll(error: string): void {
    for (const id of Array.from(this._pending.keys())) {
      this._fail(id, error);
    }
  }

  private _comm: Kernel.IComm | null = null;
  private _side: SideShell;
  private _reattaching: Promise<void> | null = null;
  private _historyTimer: ReturnType<typeof setTimeout> | undefined = undefined;
  /** The websocket was lost after the last history request went out (its answer may be lost). */
  private _lostSinceHistory = false;
  private _pending = new Map<string, PendingRequest>();
  private _sink: MessageSink;
  private _down = false;
  /** While down: whether the websocket has reconnected since the restart began. */
  private _reopened = false;
  private _isDisposed = false;
  private _disposed = new Signal<this, void>(this);
}

/**
 * Keeps one `KernelChannel` per kernel connection of every followed session, so runs are
 * recorded even for notebooks that are not the active one.
 */
export class ChannelManager implements IDisposable {
  get isDisposed(): boolean {
    return this._isDisposed;
  }

  /** Emitted when a channel is created (e.g. a notebook's kernel changed). */
  get channelAdded(): ISignal<this, KernelChannel> {
    return this._channelAdded;
  }

  /** The channel of a kernel connection, created on first use. */
  channelFor(kernel: Kernel.IKernelConnection): KernelChannel | null {
    if (this._isDisposed) {
      return null;
    }
    if (kernel.isDisposed) {
      return this._channels.get(kernel) ?? null; // a dead kernel's channel, kept to show what happened
    }
    let channel = this._channels.get(kernel);
    if (channel === undefined || channel.isDisposed) {
      const created = new KernelChannel(kernel);
      created.disposed.connect(() => {
        if (this._channels.get(kernel) === created) {
          this._channels.delete(kernel);
        }
      });
      this._channels.set(kernel, created);
      channel = created;
      this._channelAdded.emit(created);
    }
    return channel;
  }

  /** Follow a session context: a channel for its kernel now and after every kernel change. */
  watch(sessionContext: ISessionContext): void {
    if (this._watched.has(sessionContext)) {
      return;
    }
    this._watched.add(sessionContext);
    const attach = () => {
      const kernel = sessionContext.session?.kernel ?? null;
      if (kernel !== null) {
        this.channelFor(kernel);
      }
      for (const [old, channel] of Array.from(this._channels)) {
        if (old.isDisposed && old !== kernel) {
          channel.dispose(); // a dead kernel's channel, replaced by the new kernel's
        }
      }
    };
    sessionContext.kernelChanged.connect(attach, this);
    sessionContext.disposed.connect(() => {
      this._watched.delete(sessionContext);
    }, this);
    attach();
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    for (const channel of Array.from(this._channels.values())) {
      channel.dispose();
    }
    this._channels.clear();
    Signal.clearData(this);
  }

  private _channels = new Map<Kernel.IKernelConnection, KernelChannel>();
  private _watched = new Set<ISessionContext>();
  private _channelAdded = new Signal<this, KernelChannel>(this);
  private _isDisposed = false;
}
