// @vitest-environment jsdom
import { Kernel, KernelMessage } from '@jupyterlab/services';
import { Signal } from '@lumino/signaling';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import {
  ChannelManager,
  KernelChannel,
  MessageSink,
  REQUEST_TIMEOUT_MS,
  newRequestId
} from '../channel';
import { CONTROL_TIMEOUT_MS } from '../sideshell';
import { Store, linkSummary, runText } from '../store';
import { fixture, loadFixtures } from './fixtures';

/** Just enough of a comm for KernelChannel. */
class FakeComm {
  constructor(readonly commId: string) {}
  isDisposed = false;
  sent: unknown[] = [];
  onMsg: ((msg: KernelMessage.ICommMsgMsg) => void) | null = null;
  onClose: ((msg: KernelMessage.ICommCloseMsg) => void) | null = null;
  send(data: unknown): { done: Promise<void> } {
    this.sent.push(data);
    return { done: Promise.resolve() };
  }
  /** The kernel sends a comm_msg. */
  deliver(data: unknown): void {
    this.onMsg?.({
      content: { comm_id: this.commId, data }
    } as unknown as KernelMessage.ICommMsgMsg);
  }
}

/** A request the panel sent: its payload and the subshell it was addressed to (null: main shell). */
interface SentRequest {
  data: unknown;
  subshell: string | null;
}

function reply(content: unknown): { done: Promise<unknown>; dispose(): void } {
  return { done: Promise.resolve({ content }), dispose: () => undefined };
}

/**
 * Just enough of a KernelConnection for KernelChannel, mimicking services 7 on restart and
 * ipykernel 7 on the control channel (kernel_info, comm_info, subshells).
 */
class FakeKernel {
  id = 'kernel-1';
  clientId = 'client-1';
  username = 'user';
  status: Kernel.Status = 'idle';
  connectionStatus: Kernel.ConnectionStatus = 'connected';
  isDisposed = false;
  targets = new Map<string, (comm: FakeComm, msg: KernelMessage.ICommOpenMsg) => void>();
  registerCalls = 0;
  existingComms: { [id: string]: { target_name: string } } = {};
  statusChanged = new Signal<this, Kernel.Status>(this);
  connectionStatusChanged = new Signal<this, Kernel.ConnectionStatus>(this);
  disposed = new Signal<this, void>(this);
  comms = new Map<string, FakeComm>();
  /** JEP 91 subshells offered (false: an ipykernel 6-like kernel). */
  subshells = true;
  /** Whether the control channel answers at all. */
  answersControl = true;
  /** Control requests received, by type. */
  control: string[] = [];
  /** comm_msg sent with sendShellMessage (the panel's subshell path). */
  shellSent: SentRequest[] = [];
  shellCommInfoCalls = 0;
  /** What list_subshell_request answers. */
  liveSubshells: string[] = [];
  interrupts = 0;
  private _subshellCount = 0;

  registerCommTarget(name: string, cb: (comm: FakeComm, msg: KernelMessage.ICommOpenMsg) => void) {
    this.registerCalls++;
    this.targets.set(name, cb);
  }
  removeCommTarget(name: string, cb: unknown) {
    if (this.targets.get(name) === cb) {
      this.targets.delete(name);
    }
  }
  hasComm(id: string): boolean {
    return this.comms.has(id);
  }
  createComm(_target: string, id: string): FakeComm {
    const comm = new FakeComm(id);
    this.comms.set(id, comm);
    return comm;
  }
  async requestCommInfo(): Promise<unknown> {
    this.shellCommInfoCalls++;
    return { content: { status: 'ok', comms: this.existingComms } };
  }
  sendControlMessage(msg: KernelMessage.IMessage): { done: Promise<unknown>; dispose(): void } {
    const type = msg.header.msg_type;
    this.control.push(type);
    if (!this.answersControl) {
      return { done: new Promise(() => undefined), dispose: () => undefined };
    }
    switch (type) {
      case 'kernel_info_request':
        return reply({
          status: 'ok',
          supported_features: this.subshells ? ['kernel subshells'] : []
        });
      case 'create_subshell_request':
        this._subshellCount++;
        return reply({ status: 'ok', subshell_id: `sub-${this._subshellCount}` });
      case 'comm_info_request':
        return reply({ status: 'ok', comms: this.existingComms });
      case 'list_subshell_request':
        return reply({ status: 'ok', subshell_id: this.liveSubshells });
      default:
        return reply({ status: 'ok' });
    }
  }
  sendShellMessage(msg: KernelMessage.IShellMessage): { done: Promise<void> } {
    const content = msg.content as { comm_id: string; data: unknown };
    this.shellSent.push({ data: content.data, subshell: msg.header.subshell_id ?? null });
    return { done: Promise.resolve() };
  }
  async interrupt(): Promise<void> {
    this.interrupts++;
  }
  /** The kernel opens the aigc_lab comm with `data` (normally the hello). */
  open(data: unknown, id = 'comm-1'): FakeComm {
    const comm = new FakeComm(id);
    this.comms.set(id, comm);
    const cb = this.targets.get('aigc_lab');
    if (cb === undefined) {
      throw new Error('no aigc_lab target registered');
    }
    cb(comm, {
      content: { comm_id: id, target_name: 'aigc_lab', data }
    } as unknown as KernelMessage.ICommOpenMsg);
    return comm;
  }
  /**
   * What services 7 does on restart: status 'restarting', comms disposed without onClose; while the
   * REST restart runs, the old kernel's shutdown statuses still arrive on the old socket; then the
   * socket is reopened ('connecting' sets the status 'unknown') and the new kernel reports in.
   */
  restart(): void {
    for (const c of this.comms.values()) {
      c.isDisposed = true;
    }
    this.comms.clear();
    this.setStatus('restarting');
    this.setStatus('busy'); // the old kernel handling the server's shutdown_request
    this.setStatus('idle');
    this.setConnection('connecting');
    this.setStatus('unknown');
    this.setConnection('connected');
    this.setStatus('starting');
    this.setStatus('busy'); // kernel_info_request
    this.setStatus('idle');
  }
  setStatus(status: Kernel.Status): void {
    this.status = status;
    this.statusChanged.emit(status);
  }
  setConnection(status: Kernel.ConnectionStatus): void {
    this.connectionStatus = status;
    this.connectionStatusChanged.emit(status);
  }
  dispose(): void {
    this.isDisposed = true;
    this.disposed.emit();
  }
}

/** Everything the panel sent to the kernel on `comm` (main shell) or on its subshell, in order of type. */
function sent(fake: FakeKernel, comm: FakeComm): SentRequest[] {
  return [...comm.sent.map(data => ({ data, subshell: null })), ...fake.shellSent];
}

/** Let pending promise callbacks and zero-delay timers run. */
async function settle(): Promise<void> {
  for (let k = 0; k < 5; k++) {
    await new Promise(r => setTimeout(r, 0));
  }
}

function makeChannel(fake = new FakeKernel()): { fake: FakeKernel; channel: KernelChannel } {
  const channel = new KernelChannel(fake as unknown as Kernel.IKernelConnection);
  return { fake, channel };
}

let warn: ReturnType<typeof vi.spyOn>;
beforeEach(() => {
  warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined);
  window.sessionStorage.clear();
});
afterEach(() => {
  warn.mockRestore();
});

describe('MessageSink', () => {
  it('dispatches every valid kernel → panel fixture', () => {
    for (const f of loadFixtures('valid')) {
      const store = new Store();
      new MessageSink(store).receive(f.data);
      if (f.name === 'cancel.json' || f.name === 'history.json') {
        expect(store.state.connection.ignored, f.name).toBe(1);
      } else {
        expect(store.state.connection.ignored, f.name).toBe(0);
      }
    }
  });

  it('warns about and ignores every invalid fixture', () => {
    for (const f of loadFixtures('invalid')) {
      const store = new Store();
      warn.mockClear();
      new MessageSink(store).receive(f.data);
      expect(store.state.order, f.name).toEqual([]);
      expect(warn, f.name).toHaveBeenCalledTimes(1);
      const text = String(warn.mock.calls[0][0]);
      if (f.name === 'newer_major_version.json') {
        expect(store.state.connection.protocolMismatch).toContain('protocol v2');
      } else {
        expect(text).toMatch(/^\[aigc-lab\] ignored malformed message: /);
        expect(store.state.connection.ignored).toBe(1);
      }
    }
  });
});

describe('KernelChannel', () => {
  it('registers the comm target and receives hello as comm-open data', async () => {
    const { fake, channel } = makeChannel();
    expect(fake.targets.has('aigc_lab')).toBe(true);
    const comm = fake.open(fixture('valid', 'hello.json'));
    expect(channel.store.state.connection.connected).toBe(true);
    // Opening makes a request at once: the kernel streams live only to a panel that has spoken.
    expect(channel.store.state.connection.history?.state).toBe('pending');
    await settle();
    const requests = sent(fake, comm);
    expect(requests).toHaveLength(1);
    expect(requests[0].data).toMatchObject({ v: 1, type: 'history', run: null });
    comm.deliver(fixture('valid', 'run_start_generate.json'));
    comm.deliver(fixture('valid', 'tokens.json'));
    comm.deliver({ v: 1, type: 'tokens', run: 'gen-7f3a', items: [{ i: 3 }] });
    expect(runText(channel.store.state.runs['gen-7f3a'])).toBe('Once upon a ✓');
    expect(channel.store.state.connection.ignored).toBe(1);
    expect(String(warn.mock.calls[0][0])).toContain('ignored malformed message');
  });

  it('sends its requests on a subshell of its own, created on the control channel', async () => {
    const { fake } = makeChannel();
    const comm = fake.open(fixture('valid', 'hello.json'));
    await settle();
    // Asked on control (served while a cell runs), never on the busy shell.
    expect(fake.control).toEqual([
      'comm_info_request',
      'kernel_info_request',
      'create_subshell_request'
    ]);
    expect(comm.sent).toEqual([]);
    expect(fake.shellSent).toHaveLength(1);
    expect(fake.shellSent[0]).toMatchObject({ subshell: 'sub-1', data: { type: 'history' } });
  });

  it('after a reload, reuses the subshell this tab made if the kernel still has it', async () => {
    const first = makeChannel();
    first.fake.open(fixture('valid', 'hello.json'));
    await settle();
    expect(first.fake.shellSent[0].subshell).toBe('sub-1');
    // A reloaded page: a new connection to the same kernel, which still runs sub-1.
    const fake = new FakeKernel();
    fake.liveSubshells = ['sub-1'];
    makeChannel(fake);
    fake.open(fixture('valid', 'hello.json'));
    await settle();
    expect(fake.control).toContain('list_subshell_request');
    expect(fake.control).not.toContain('create_subshell_request');
    expect(fake.shellSent[0].subshell).toBe('sub-1');
    // A restarted kernel no longer has it: a new one is made.
    const fresh = new FakeKernel();
    makeChannel(fresh);
    fresh.open(fixture('valid', 'hello.json'));
    await settle();
    expect(fresh.control).toContain('create_subshell_request');
  });

  it('uses the main shell for kernels without subshells', async () => {
    const fake = new FakeKernel();
    fake.subshells = false;
    makeChannel(fake);
    const comm = fake.open(fixture('valid', 'hello.json'));
    await settle();
    expect(fake.control).not.toContain('create_subshell_request');
    expect(fake.shellSent).toEqual([]);
    expect(comm.sent).toMatchObject([{ type: 'history' }]);
  });

  it('falls back to the shell when the control channel does not answer', async () => {
    vi.useFakeTimers();
    try {
      const fake = new FakeKernel();
      fake.answersControl = false;
      fake.existingComms = { 'old-comm': { target_name: 'aigc_lab' } };
      const { channel } = makeChannel(fake);
      await vi.advanceTimersByTimeAsync(CONTROL_TIMEOUT_MS + 1);
      expect(fake.shellCommInfoCalls).toBe(1);
      expect(channel.hasComm).toBe(true);
      await vi.advanceTimersByTimeAsync(CONTROL_TIMEOUT_MS + 1);
      expect(fake.comms.get('old-comm')?.sent).toMatchObject([{ type: 'history' }]);
    } finally {
      vi.useRealTimers();
    }
  });

  it('cancel sends a request with a fresh id and resolves on the matching ack', async () => {
    const { fake, channel } = makeChannel();
    const comm = fake.open(fixture('valid', 'hello.json'));
    comm.deliver(fixture('valid', 'run_start_generate.json'));
    const done = channel.cancel('gen-7f3a');
    await settle();
    const requests = sent(fake, comm);
    expect(requests).toHaveLength(2); // the history request made on open, then the cancel
    const req = requests[1].data as { v: number; type: string; run: string; id: string };
    expect(req).toMatchObject({ v: 1, type: 'cancel', run: 'gen-7f3a' });
    expect(requests[1].subshell).toBe('sub-1');
    expect(req.id).toMatch(/\S/);
    expect(channel.store.state.runs['gen-7f3a'].cancel?.state).toBe('pending');
    comm.deliver({ v: 1, type: 'ack', run: 'gen-7f3a', id: 'someone-else', ok: true, error: null });
    expect(channel.store.state.runs['gen-7f3a'].cancel?.state).toBe('pending');
    comm.deliver({ v: 1, type: 'ack', run: 'gen-7f3a', id: req.id, ok: true, error: null });
    await expect(done).resolves.toMatchObject({ id: req.id, ok: true });
    expect(channel.store.state.runs['gen-7f3a'].cancel?.state).toBe('acknowledged');
  });

  it('requests that get no answer time out with a message; a late ack still counts', async () => {
    vi.useFakeTimers();
    try {
      const { fake, channel } = makeChannel();
      const comm = fake.open(fixture('valid', 'hello.json'));
      comm.deliver(fixture('valid', 'run_start_generate.json'));
      const done = channel.cancel('gen-7f3a');
      const failed = expect(done).rejects.toThrow(/no answer from the kernel within 10 s/);
      await vi.advanceTimersByTimeAsync(REQUEST_TIMEOUT_MS + 1);
      await failed;
      const run = channel.store.state.runs['gen-7f3a'];
      expect(run.cancel?.state).toBe('failed');
      expect(channel.store.state.connection.history?.state).toBe('failed');
      expect(channel.store.state.connection.history?.error).toMatch(/no answer/);
      const history = fake.shellSent[0].data as { id: string };
      comm.deliver({ v: 1, type: 'ack', run: null, id: history.id, ok: true, error: null });
      expect(channel.store.state.connection.history?.state).toBe('acknowledged');
    } finally {
      vi.useRealTimers();
    }
  });

  it('interrupt interrupts the kernel', async () => {
    const { fake, channel } = makeChannel();
    await channel.interrupt();
    expect(fake.interrupts).toBe(1);
  });

  it('cancel without an open comm fails at once', async () => {
    const { channel } = makeChannel();
    await expect(channel.cancel('gen-7f3a')).rejects.toThrow(/not connected/);
    expect(channel.store.state.runs['gen-7f3a'].cancel?.state).toBe('failed');
  });

  it('survives a restart: interrupts runs, fails pending cancels, re-registers, reconnects', async () => {
    const { fake, channel } = makeChannel();
    const comm = fake.open(fixture('valid', 'hello.json'));
    comm.deliver(fixture('valid', 'run_start_generate.json'));
    const pending = channel.cancel('gen-7f3a');
    await settle();
    const before = fake.registerCalls;
    fake.restart();
    await expect(pending).rejects.toThrow(/restarted/);
    const s = channel.store.state;
    expect(s.runs['gen-7f3a'].status).toBe('interrupted');
    expect(s.connection.connected).toBe(false);
    expect(channel.hasComm).toBe(false);
    expect(fake.registerCalls).toBeGreaterThan(before);
    // The restarted kernel opens a new comm: the same channel picks it up.
    const comm2 = fake.open(fixture('valid', 'hello.json'), 'comm-2');
    expect(channel.store.state.connection.connected).toBe(true);
    comm2.deliver(fixture('valid', 'run_start_train.json'));
    expect(channel.store.state.order).toEqual(['train-01', 'gen-7f3a']); // by start time
    void channel.cancel('train-01').catch(() => undefined);
    await settle();
    // The old subshell died with the kernel: a new one carries the new comm's requests.
    expect(fake.shellSent.map(r => [(r.data as { type: string }).type, r.subshell])).toEqual([
      ['history', 'sub-1'],
      ['cancel', 'sub-1'],
      ['history', 'sub-2'],
      ['cancel', 'sub-2']
    ]);
  });

  it('shows a restart from its start until the new kernel reports on the reopened socket', () => {
    const { fake, channel } = makeChannel();
    fake.open(fixture('valid', 'hello.json'));
    const shown: string[] = [];
    channel.store.subscribe(s => {
      const now = linkSummary(s.connection).state;
      if (shown[shown.length - 1] !== now) {
        shown.push(now);
      }
    });
    fake.restart();
    // neither the old kernel's last statuses nor the socket's reopening show as anything but the restart
    expect(shown).toEqual(['restarting', 'waiting']);
  });

  it('a restart whose reconnect gives up says so', () => {
    const { fake, channel } = makeChannel();
    fake.open(fixture('valid', 'hello.json'));
    fake.setStatus('restarting');
    fake.setConnection('connecting');
    expect(linkSummary(channel.store.state.connection).state).toBe('restarting');
    fake.setConnection('disconnected');
    expect(linkSummary(channel.store.state.connection).state).toBe('disconnected');
  });

  it('a newer protocol version shows a mismatch and is not rendered', async () => {
    const { fake, channel } = makeChannel();
    const comm = fake.open({ v: 2, type: 'hello', run: null, version: 2, kernel: {} });
    expect(channel.store.state.connection.protocolMismatch).toMatch(/protocol v2.*update/);
    await settle();
    expect(sent(fake, comm)).toHaveLength(0); // no request in a protocol we do not speak
    expect(channel.store.state.connection.connected).toBe(false);
  });

  it('re-attaches to a comm the kernel opened before the page loaded', async () => {
    const fake = new FakeKernel();
    fake.existingComms = { 'old-comm': { target_name: 'aigc_lab' }, other: { target_name: 'x' } };
    const { channel } = makeChannel(fake);
    await settle();
    expect(fake.shellCommInfoCalls).toBe(0); // asked on control
    expect(channel.hasComm).toBe(true);
    expect(channel.store.state.connection.connected).toBe(true);
    expect(fake.comms.has('other')).toBe(false);
    expect(fake.shellSent).toMatchObject([{ data: { type: 'history' }, subshell: 'sub-1' }]);
    fake.comms.get('old-comm')?.deliver(fixture('valid', 'tokens.json'));
    expect(channel.store.state.runs['gen-7f3a'].placeholder).toBe(true);
  });

  it('shows a lost websocket and a dead kernel', () => {
    const { fake, channel } = makeChannel();
    fake.open(fixture('valid', 'hello.json'));
    fake.connectionStatus = 'connecting';
    fake.connectionStatusChanged.emit('connecting');
    expect(channel.store.state.connection.link).toBe('websocket-lost');
    fake.connectionStatus = 'connected';
    fake.connectionStatusChanged.emit('connected');
    expect(channel.store.state.connection.link).toBe('ok');
    fake.connectionStatus = 'disconnected'; // services stopped retrying: not "reconnecting…"
    fake.connectionStatusChanged.emit('disconnected');
    expect(channel.store.state.connection.link).toBe('disconnected');
    fake.connectionStatus = 'connected';
    fake.connectionStatusChanged.emit('connected');
    fake.status = 'dead';
    fake.statusChanged.emit('dead');
    expect(channel.store.state.connection.link).toBe('dead');
  });

  it('a closed comm disconnects; a disposed kernel disposes the channel', () => {
    const { fake, channel } = makeChannel();
    const comm = fake.open(fixture('valid', 'hello.json'));
    comm.onClose?.({} as KernelMessage.ICommCloseMsg);
    expect(channel.store.state.connection.connected).toBe(false);
    fake.dispose();
    expect(channel.isDisposed).toBe(true);
  });

  it('a dead kernel keeps its channel, marked dead, until the notebook gets another kernel', () => {
    const manager = new ChannelManager();
    const fake = new FakeKernel();
    const kernel = fake as unknown as Kernel.IKernelConnection;
    const channel = manager.channelFor(kernel);
    fake.open(fixture('valid', 'hello.json')).deliver(fixture('valid', 'run_start_generate.json'));
    fake.status = 'dead';
    fake.statusChanged.emit('dead');
    fake.dispose(); // what services does with a dead kernel's connection
    expect(channel?.isDisposed).toBe(false);
    expect(manager.channelFor(kernel)).toBe(channel); // still what the panel shows for this notebook
    expect(channel?.store.state.connection.link).toBe('dead');
    expect(channel?.store.state.runs['gen-7f3a'].status).toBe('interrupted');
    const alive = new FakeKernel(); // a kernel disposed for another reason (shut down): its channel goes
    const other = manager.channelFor(alive as unknown as Kernel.IKernelConnection);
    alive.dispose();
    expect(other?.isDisposed).toBe(true);
    manager.dispose();
  });

  it('asks for the replay again when the websocket comes back with it unanswered', async () => {
    const { fake } = makeChannel();
    const comm = fake.open(fixture('valid', 'hello.json'));
    await settle();
    expect(sent(fake, comm)).toHaveLength(1);
    fake.connectionStatus = 'connecting';
    fake.connectionStatusChanged.emit('connecting');
    fake.connectionStatus = 'connected';
    fake.connectionStatusChanged.emit('connected');
    await settle();
    const requests = sent(fake, comm);
    expect(requests.map(r => (r.data as { type: string }).type)).toEqual(['history', 'history']);
    const second = requests[1].data as { id: string };
    comm.deliver({ v: 1, type: 'ack', run: null, id: second.id, ok: true, error: null });
    fake.connectionStatusChanged.emit('connecting');
    fake.connectionStatusChanged.emit('connected');
    await settle();
    expect(sent(fake, comm)).toHaveLength(2); // answered: no third request
  });

  it('makes one history request per attach, however often the socket reports connected', async () => {
    const { fake, channel } = makeChannel();
    const comm = fake.open(fixture('valid', 'hello.json'));
    await settle();
    // 'connected' again without a loss in between (services re-reports it): no second request.
    fake.connectionStatusChanged.emit('connected');
    fake.connectionStatusChanged.emit('connected');
    await settle();
    expect(sent(fake, comm).map(r => (r.data as { type: string }).type)).toEqual(['history']);
    expect(channel.store.state.connection.history?.state).toBe('pending');
    // A comm found again by the lookup (the reconnect path) is the same attach: still one.
    fake.existingComms = { 'comm-1': { target_name: 'aigc_lab' } };
    fake.connectionStatusChanged.emit('connected');
    await settle();
    expect(sent(fake, comm)).toHaveLength(1);
  });

  it('asks for one replay when the lookup finds the comm before its comm_open arrives', async () => {
    // comm_info_reply (control or shell) and comm_open (IOPub) travel on different channels: on a
    // busy machine the lookup's answer can come first. Two replays for one attach re-send every
    // run streamed live in between (a UI test saw 30 duplicate tokens after a restart).
    const { fake, channel } = makeChannel();
    await settle();
    fake.existingComms = { 'comm-1': { target_name: 'aigc_lab' } };
    fake.setConnection('connecting');
    fake.setConnection('connected'); // no comm yet: look it up
    await settle();
    expect(channel.hasComm).toBe(true);
    fake.open(fixture('valid', 'hello.json'), 'comm-1'); // then its comm_open
    await settle();
    expect(channel.store.state.connection.connected).toBe(true);
    const histories = fake.shellSent.filter(r => (r.data as { type: string }).type === 'history');
    expect(histories).toHaveLength(1);
    fake.comms.get('comm-1')?.deliver(fixture('valid', 'tokens.json')); // the comm services now holds
    expect(channel.store.state.runs['gen-7f3a']).toBeDefined();
  });

  it('request ids are unique', () => {
    const ids = new Set(Array.from({ length: 1000 }, () => newRequestId()));
    expect(ids.size).toBe(1000);
  });
});
