import { Kernel, KernelMessage } from '@jupyterlab/services';
import { Signal } from '@lumino/signaling';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import { KernelChannel, MessageSink, newRequestId } from '../channel';
import { Store } from '../store';
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
    this.onMsg?.({ content: { comm_id: this.commId, data } } as unknown as KernelMessage.ICommMsgMsg);
  }
}

/** Just enough of a KernelConnection for KernelChannel, mimicking services 7 on restart. */
class FakeKernel {
  id = 'kernel-1';
  isDisposed = false;
  targets = new Map<string, (comm: FakeComm, msg: KernelMessage.ICommOpenMsg) => void>();
  registerCalls = 0;
  existingComms: { [id: string]: { target_name: string } } = {};
  statusChanged = new Signal<this, Kernel.Status>(this);
  connectionStatusChanged = new Signal<this, Kernel.ConnectionStatus>(this);
  disposed = new Signal<this, void>(this);
  comms = new Map<string, FakeComm>();

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
    return { content: { status: 'ok', comms: this.existingComms } };
  }
  /** The kernel opens the aigc_lab comm with `data` (normally the hello). */
  open(data: unknown, id = 'comm-1'): FakeComm {
    const comm = new FakeComm(id);
    this.comms.set(id, comm);
    const cb = this.targets.get('aigc_lab');
    if (cb === undefined) {
      throw new Error('no aigc_lab target registered');
    }
    cb(comm, { content: { comm_id: id, target_name: 'aigc_lab', data } } as unknown as KernelMessage.ICommOpenMsg);
    return comm;
  }
  /** What services 7 does on restart: status 'restarting', comms disposed without onClose. */
  restart(): void {
    for (const c of this.comms.values()) {
      c.isDisposed = true;
    }
    this.comms.clear();
    this.statusChanged.emit('restarting');
    this.statusChanged.emit('starting');
    this.statusChanged.emit('idle');
  }
  dispose(): void {
    this.isDisposed = true;
    this.disposed.emit();
  }
}

function makeChannel(fake = new FakeKernel()): { fake: FakeKernel; channel: KernelChannel } {
  const channel = new KernelChannel(fake as unknown as Kernel.IKernelConnection);
  return { fake, channel };
}

let warn: ReturnType<typeof vi.spyOn>;
beforeEach(() => {
  warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined);
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
  it('registers the comm target and receives hello as comm-open data', () => {
    const { fake, channel } = makeChannel();
    expect(fake.targets.has('aigc_lab')).toBe(true);
    const comm = fake.open(fixture('valid', 'hello.json'));
    expect(channel.store.state.connection.connected).toBe(true);
    // Opening makes a request at once: the kernel streams live only to a panel that has spoken.
    expect(comm.sent).toHaveLength(1);
    expect(comm.sent[0]).toMatchObject({ v: 1, type: 'history', run: null });
    expect(channel.store.state.connection.history?.state).toBe('pending');
    comm.deliver(fixture('valid', 'run_start_generate.json'));
    comm.deliver(fixture('valid', 'tokens.json'));
    comm.deliver({ v: 1, type: 'tokens', run: 'gen-7f3a', items: [{ i: 3 }] });
    expect(channel.store.state.runs['gen-7f3a'].text).toBe('Once upon a ✓');
    expect(channel.store.state.connection.ignored).toBe(1);
    expect(String(warn.mock.calls[0][0])).toContain('ignored malformed message');
  });

  it('cancel sends a request with a fresh id and resolves on the matching ack', async () => {
    const { fake, channel } = makeChannel();
    const comm = fake.open(fixture('valid', 'hello.json'));
    comm.deliver(fixture('valid', 'run_start_generate.json'));
    const done = channel.cancel('gen-7f3a');
    expect(comm.sent).toHaveLength(2); // the history request made on open, then the cancel
    const req = comm.sent[1] as { v: number; type: string; run: string; id: string };
    expect(req).toMatchObject({ v: 1, type: 'cancel', run: 'gen-7f3a' });
    expect(req.id).toMatch(/\S/);
    expect(channel.store.state.runs['gen-7f3a'].cancel?.state).toBe('pending');
    comm.deliver({ v: 1, type: 'ack', run: 'gen-7f3a', id: 'someone-else', ok: true, error: null });
    expect(channel.store.state.runs['gen-7f3a'].cancel?.state).toBe('pending');
    comm.deliver({ v: 1, type: 'ack', run: 'gen-7f3a', id: req.id, ok: true, error: null });
    await expect(done).resolves.toMatchObject({ id: req.id, ok: true });
    expect(channel.store.state.runs['gen-7f3a'].cancel?.state).toBe('acknowledged');
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
    expect(channel.store.state.order).toEqual(['gen-7f3a', 'train-01']);
    void channel.cancel('train-01').catch(() => undefined);
    expect((comm2.sent as { type: string }[]).map(m => m.type)).toEqual(['history', 'cancel']);
    expect((comm.sent as { type: string }[]).map(m => m.type)).toEqual(['history', 'cancel']);
  });

  it('a newer protocol version shows a mismatch and is not rendered', () => {
    const { fake, channel } = makeChannel();
    const comm = fake.open({ v: 2, type: 'hello', run: null, version: 2, kernel: {} });
    expect(channel.store.state.connection.protocolMismatch).toMatch(/protocol v2.*update/);
    expect(comm.sent).toHaveLength(0); // no request in a protocol we do not speak
    expect(channel.store.state.connection.connected).toBe(false);
  });

  it('re-attaches to a comm the kernel opened before the page loaded', async () => {
    const fake = new FakeKernel();
    fake.existingComms = { 'old-comm': { target_name: 'aigc_lab' }, other: { target_name: 'x' } };
    const { channel } = makeChannel(fake);
    await new Promise(r => setTimeout(r, 0));
    expect(channel.hasComm).toBe(true);
    expect(channel.store.state.connection.connected).toBe(true);
    expect(fake.comms.has('other')).toBe(false);
    fake.comms.get('old-comm')?.deliver(fixture('valid', 'tokens.json'));
    expect(channel.store.state.runs['gen-7f3a'].placeholder).toBe(true);
  });

  it('a closed comm disconnects; a disposed kernel disposes the channel', () => {
    const { fake, channel } = makeChannel();
    const comm = fake.open(fixture('valid', 'hello.json'));
    comm.onClose?.({} as KernelMessage.ICommCloseMsg);
    expect(channel.store.state.connection.connected).toBe(false);
    fake.dispose();
    expect(channel.isDisposed).toBe(true);
  });

  it('request ids are unique', () => {
    const ids = new Set(Array.from({ length: 1000 }, () => newRequestId()));
    expect(ids.size).toBe(1000);
  });
});
