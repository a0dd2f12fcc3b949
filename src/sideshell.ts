/**
 * The panel's own way into a kernel that a busy main shell does not block.
 *
 * Everything JupyterLab sends on the shell channel (comm messages, `comm_info_request`, even its
 * own `kernel_info_request`) waits until the kernel's main thread is free: behind every cell that
 * Run All queued, or for the whole of a long foreground cell. Two parts of a kernel are served by
 * threads of their own (docs/protocol.md, "Who is listening"):
 *
 * - the control channel (ipykernel >= 6 answers `kernel_info_request` and `comm_info_request`
 *   there too, and `create_subshell_request` from ipykernel 7);
 * - JEP 91 subshells (ipykernel >= 7): a shell message whose header names a subshell runs on that
 *   subshell's thread.
 *
 * So the panel asks on control whether the kernel has subshells (JupyterLab's `kernel.info` comes
 * from the shell and, after a page reload mid-cell, only once the cell ends), creates one subshell
 * per kernel for itself (after a reload the tab reuses the one it made, found in sessionStorage and
 * checked with `list_subshell_request`, so reloads do not pile up kernel threads), and sends its
 * comm messages with that subshell's id. A kernel without subshells gets the same messages on the
 * main shell, as before.
 */

import { Kernel, KernelMessage } from '@jupyterlab/services';

/** How long a control request may take before the panel stops waiting for it. */
export const CONTROL_TIMEOUT_MS = 5000;

/** The `comms` field of a `comm_info_reply`: comm id -> target name. */
export type CommInfo = { [commId: string]: { target_name: string } };

function isObject(value: unknown): value is { [key: string]: unknown } {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A request that ipykernel serves on control although services types it as a shell message. */
type ControlShellRequest = KernelMessage.IInfoRequestMsg | KernelMessage.ICommInfoRequestMsg;

export class SideShell {
  constructor(
    readonly kernel: Kernel.IKernelConnection,
    readonly timeoutMs = CONTROL_TIMEOUT_MS
  ) {}

  /**
   * The panel's subshell id, or null when the kernel has none (or does not answer on control):
   * requests then travel on the main shell. Asked once per kernel process and connection;
   * `reset()` forgets the answer.
   */
  subshell(): Promise<string | null> {
    if (this._subshell === null) {
      const attempt = this._createSubshell();
      this._subshell = attempt;
      void attempt.then(() => {
        if (this._subshell === attempt) {
          this._settled = true;
        }
      });
    }
    return this._subshell;
  }

  /** The id of the subshell once created (null before, or without subshells). */
  get subshellId(): string | null {
    return this._subshellId;
  }

  /**
   * Open comms of `target` (`comm_info_request`), asked on control so that a cell running on the
   * main shell does not delay the answer; the shell is the fallback for kernels that do not
   * answer on control.
   */
  async commInfo(target: string): Promise<CommInfo> {
    try {
      const reply = await this._control(
        KernelMessage.createMessage<KernelMessage.ICommInfoRequestMsg>({
          msgType: 'comm_info_request',
          channel: 'shell',
          session: this.kernel.clientId,
          username: this.kernel.username,
          content: { target_name: target }
        })
      );
      const comms = commsOf(reply);
      if (comms !== null) {
        return comms;
      }
    } catch (e) {
      console.debug('[aigc-lab] comm_info_request on control failed; asking on the shell', e);
    }
    const reply = await this.kernel.requestCommInfo({ target_name: target });
    return commsOf(reply.content) ?? {};
  }

  /** Send `data` on comm `commId` with the header of subshell `subshellId` (see `subshell()`). */
  sendCommMsg(
    commId: string,
    data: KernelMessage.ICommMsgMsg['content']['data'],
    subshellId: string
  ): void {
    const msg = KernelMessage.createMessage<KernelMessage.ICommMsgMsg<'shell'>>({
      msgType: 'comm_msg',
      channel: 'shell',
      session: this.kernel.clientId,
      username: this.kernel.username,
      subshellId,
      content: { comm_id: commId, data }
    });
    this.kernel.sendShellMessage(msg, false, true).done.catch(() => undefined);
  }

  /** The kernel restarted: its subshells are gone. */
  reset(): void {
    this._subshell = null;
    this._subshellId = null;
    this._settled = false;
  }

  /** The websocket came back: ask again if the last attempt found no subshell. */
  retry(): void {
    if (this._settled && this._subshellId === null) {
      this._subshell = null;
      this._settled = false;
    }
  }

  /** Delete the subshell (best effort: the kernel may be gone already). */
  dispose(): void {
    const id = this._subshellId;
    this.reset();
    if (id === null || this.kernel.isDisposed || this.kernel.status === 'dead') {
      return;
    }
    rememberSubshell(this.kernel.id, null);
    try {
      const msg = KernelMessage.createMessage<KernelMessage.IDeleteSubshellRequestMsg>({
        msgType: 'delete_subshell_request',
        channel: 'control',
        session: this.kernel.clientId,
        username: this.kernel.username,
        content: { subshell_id: id }
      });
      this.kernel.sendControlMessage(msg, true, true).done.catch(() => undefined);
    } catch {
      // the kernel connection is going away
    }
  }

  private async _createSubshell(): Promise<string | null> {
    try {
      const info = await this._control(
        KernelMessage.createMessage<KernelMessage.IInfoRequestMsg>({
          msgType: 'kernel_info_request',
          channel: 'shell',
          session: this.kernel.clientId,
          username: this.kernel.username,
          content: {}
        })
      );
      const features = isObject(info) ? info['supported_features'] : undefined;
      if (!Array.isArray(features) || !features.includes('kernel subshells')) {
        return null;
      }
      const reused = await this._reuseSubshell();
      const id = reused ?? (await this._newSubshell());
      if (id !== null) {
        this._subshellId = id;
        rememberSubshell(this.kernel.id, id);
      }
      return id;
    } catch (e) {
      console.debug('[aigc-lab] no subshell: panel requests use the main shell', e);
      return null;
    }
  }

  /** The subshell this tab made before a reload, if the kernel still has it (no thread leaks). */
  private async _reuseSubshell(): Promise<string | null> {
    const id = rememberedSubshell(this.kernel.id);
    if (id === null) {
      return null;
    }
    const msg = KernelMessage.createMessage<KernelMessage.IListSubshellRequestMsg>({
      msgType: 'list_subshell_request',
      channel: 'control',
      session: this.kernel.clientId,
      username: this.kernel.username,
      content: {}
    });
    await this._whenConnected();
    const reply = await this._withTimeout(this.kernel.sendControlMessage(msg, true, true));
    const content: unknown = reply.content;
    const ids = isObject(content) ? content['subshell_id'] : null;
    return Array.isArray(ids) && ids.includes(id) ? id : null;
  }

  private async _newSubshell(): Promise<string | null> {
    const msg = KernelMessage.createMessage<KernelMessage.ICreateSubshellRequestMsg>({
      msgType: 'create_subshell_request',
      channel: 'control',
      session: this.kernel.clientId,
      username: this.kernel.username,
      content: {}
    });
    await this._whenConnected();
    const reply = await this._withTimeout(this.kernel.sendControlMessage(msg, true, true));
    const content: unknown = reply.content;
    const id = isObject(content) && content['status'] === 'ok' ? content['subshell_id'] : null;
    return typeof id === 'string' ? id : null;
  }

  /**
   * Resolve once the websocket is connected: services queues what is sent before that until the
   * kernel answers its own `kernel_info_request` on the shell, which a running cell delays (or
   * until its 3 s fallback).
   */
  private _whenConnected(): Promise<void> {
    const kernel = this.kernel;
    if (kernel.connectionStatus === 'connected') {
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        kernel.connectionStatusChanged.disconnect(onChange);
        reject(new Error(`the kernel websocket did not connect within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      const onChange = (_: Kernel.IKernelConnection, status: Kernel.ConnectionStatus): void => {
        if (status === 'connected') {
          clearTimeout(timer);
          kernel.connectionStatusChanged.disconnect(onChange);
          resolve();
        }
      };
      kernel.connectionStatusChanged.connect(onChange);
    });
  }

  /** Send a shell-type request on the control channel; resolve with the reply's content. */
  private async _control(request: ControlShellRequest): Promise<unknown> {
    await this._whenConnected();
    // ipykernel serves every shell request type on control too (Kernel.control_msg_types); the
    // services typings list only control-only types, hence the re-typing of the channel.
    const control = { ...request, channel: 'control' } as unknown as KernelMessage.IControlMessage;
    const reply = await this._withTimeout(this.kernel.sendControlMessage(control, true, true));
    return reply.content;
  }

  private _withTimeout<R extends KernelMessage.IMessage>(future: {
    done: Promise<R>;
    dispose(): void;
  }): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      const timer = setTimeout(() => {
        future.dispose();
        reject(new Error(`no answer on the control channel within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      future.done.then(
        reply => {
          clearTimeout(timer);
          resolve(reply);
        },
        (e: unknown) => {
          clearTimeout(timer);
          reject(e instanceof Error ? e : new Error(String(e)));
        }
      );
    });
  }

  private _subshell: Promise<string | null> | null = null;
  private _subshellId: string | null = null;
  private _settled = false;
}

const STORAGE_PREFIX = 'aigc-lab:subshell:';

/** The subshell id this browser tab last used for kernel `kernelId` (survives a page reload). */
function rememberedSubshell(kernelId: string): string | null {
  try {
    return globalThis.sessionStorage.getItem(STORAGE_PREFIX + kernelId);
  } catch {
    return null; // storage disabled
  }
}

function rememberSubshell(kernelId: string, subshellId: string | null): void {
  try {
    if (subshellId === null) {
      globalThis.sessionStorage.removeItem(STORAGE_PREFIX + kernelId);
    } else {
      globalThis.sessionStorage.setItem(STORAGE_PREFIX + kernelId, subshellId);
    }
  } catch {
    // storage disabled: a reload makes a new subshell
  }
}

/** The comms of a `comm_info_reply` content, or null when it is not one. */
function commsOf(content: unknown): CommInfo | null {
  if (!isObject(content) || content['status'] !== 'ok' || !isObject(content['comms'])) {
    return null;
  }
  const out: CommInfo = {};
  for (const [id, info] of Object.entries(content['comms'])) {
    if (isObject(info) && typeof info['target_name'] === 'string') {
      out[id] = { target_name: info['target_name'] };
    }
  }
  return out;
}
