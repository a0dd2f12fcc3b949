// @vitest-environment jsdom
import { nullTranslator } from '@jupyterlab/translation';
import { CommandRegistry } from '@lumino/commands';
import { describe, expect, it, vi } from 'vitest';

import {
  ALL_COMMANDS,
  CommandIDs,
  CommandStateWatcher,
  ICommandHost,
  IRunChannel,
  currentRun,
  registerCommands
} from '../commands';
import { AckMessage } from '../protocol';
import { Store } from '../store';
import { CommandButton, createPanelToolbar } from '../toolbar';
import { fixtureAction } from './fixtures';

const trans = nullTranslator.load('aigc_lab');

function fakeChannel(): IRunChannel & { cancel: ReturnType<typeof vi.fn> } {
  const store = new Store();
  const ack: AckMessage = {
    v: 1,
    type: 'ack',
    run: 'gen-7f3a',
    id: 'req-1',
    ok: true,
    error: null
  };
  return {
    store,
    hasComm: true,
    cancel: vi.fn((run: string) => {
      store.dispatch({ type: 'cancel.requested', run, id: 'req-1' });
      return Promise.resolve(ack);
    }),
    requestHistory: vi.fn(() => true)
  };
}

function setup(channel: IRunChannel | null) {
  const commands = new CommandRegistry();
  const host: ICommandHost & { channel: IRunChannel | null } = {
    channel,
    open: vi.fn(),
    clearHistory: vi.fn(),
    exportCsv: vi.fn()
  };
  const registered = registerCommands(commands, host, trans);
  return { commands, host, registered };
}

describe('commands', () => {
  it('registers every command with a label, a caption and an icon; dispose removes them', () => {
    const { commands, registered } = setup(null);
    for (const id of ALL_COMMANDS) {
      expect(commands.hasCommand(id)).toBe(true);
      expect(commands.label(id)).not.toBe('');
      expect(commands.caption(id)).not.toBe('');
      expect(commands.icon(id)).toBeDefined();
    }
    registered.dispose();
    expect(ALL_COMMANDS.some(id => commands.hasCommand(id))).toBe(false);
  });

  it('enables "Stop current run" only while a run of the followed kernel is running', async () => {
    const { commands, host } = setup(null);
    expect(commands.isEnabled(CommandIDs.stopRun)).toBe(false); // no kernel followed
    expect(commands.isEnabled(CommandIDs.exportCsv)).toBe(false);
    const channel = fakeChannel();
    host.channel = channel;
    expect(commands.isEnabled(CommandIDs.stopRun)).toBe(false); // no run
    expect(commands.isEnabled(CommandIDs.exportCsv)).toBe(true);
    channel.store.dispatch(fixtureAction('run_start_generate.json'));
    expect(commands.isEnabled(CommandIDs.stopRun)).toBe(true);

    // Stop cancels that run; while its cancel waits for the kernel, Stop is disabled again.
    const ack = await commands.execute(CommandIDs.stopRun);
    expect(channel.cancel).toHaveBeenCalledWith('gen-7f3a');
    expect(ack).toMatchObject({ type: 'ack', ok: true });
    expect(channel.store.state.runs['gen-7f3a'].cancel?.state).toBe('pending');
    expect(commands.isEnabled(CommandIDs.stopRun)).toBe(false);

    channel.store.dispatch(fixtureAction('run_end_cancelled.json'));
    expect(currentRun(channel.store.state)).toBeNull();
    expect(commands.isEnabled(CommandIDs.stopRun)).toBe(false);
    expect(await commands.execute(CommandIDs.stopRun)).toBeNull();
    expect(channel.cancel).toHaveBeenCalledTimes(1);
  });

  it('stops the newest running run', () => {
    const channel = fakeChannel();
    channel.store.dispatch(fixtureAction('run_start_generate.json'));
    channel.store.dispatch(fixtureAction('run_start_train.json'));
    const newest = channel.store.state.order[channel.store.state.order.length - 1];
    expect(currentRun(channel.store.state)?.id).toBe(newest);
  });

  it('runs the panel actions and the history replay on the followed channel', async () => {
    const channel = fakeChannel();
    const { commands, host } = setup(channel);
    await commands.execute(CommandIDs.open);
    await commands.execute(CommandIDs.exportCsv);
    await commands.execute(CommandIDs.clearHistory);
    expect(await commands.execute(CommandIDs.loadHistory)).toBe(true);
    expect(host.open).toHaveBeenCalledTimes(1);
    expect(host.exportCsv).toHaveBeenCalledTimes(1);
    expect(host.clearHistory).toHaveBeenCalledTimes(1);
    expect(channel.requestHistory).toHaveBeenCalledTimes(1);
  });

  it('notifies the registry when a run starts or ends, not on every token batch', () => {
    const channel = fakeChannel();
    const { commands } = setup(channel);
    const changed: (string | undefined)[] = [];
    commands.commandChanged.connect((_, args) => changed.push(args.id));
    const watcher = new CommandStateWatcher(commands);
    watcher.follow(channel);
    expect(changed).toEqual(ALL_COMMANDS); // following a channel refreshes all
    changed.length = 0;
    channel.store.dispatch(fixtureAction('run_start_generate.json'));
    expect(changed).toContain(CommandIDs.stopRun);
    changed.length = 0;
    channel.store.dispatch(fixtureAction('tokens.json'));
    expect(changed).toEqual([]);
    channel.store.dispatch(fixtureAction('run_end_ok.json'));
    expect(changed).toContain(CommandIDs.stopRun);
    watcher.follow(null);
    changed.length = 0;
    channel.store.dispatch(fixtureAction('run_start_generate.json'));
    expect(changed).toEqual([]); // no longer watched
    watcher.dispose();
  });

  it('puts the command buttons in a labelled toolbar; Stop follows isEnabled', () => {
    const channel = fakeChannel();
    const { commands } = setup(channel);
    const toolbar = createPanelToolbar(commands, trans);
    expect(toolbar.node.getAttribute('aria-label')).toBe('AIGC Lab actions');
    const names = Array.from(toolbar.names());
    expect(names).toEqual(['stop-run', 'load-history', 'export-csv', 'clear-history']);
    const stop = (Array.from(toolbar.children())[0] as CommandButton).button;
    expect(stop.disabled).toBe(true);
    expect(stop.classList).toContain('aigc-stop-run');
    expect(stop.getAttribute('aria-label')).toBe(commands.caption(CommandIDs.stopRun));
    expect(stop.querySelector('svg')).not.toBeNull();
    const watcher = new CommandStateWatcher(commands);
    watcher.follow(channel);
    channel.store.dispatch(fixtureAction('run_start_generate.json'));
    expect(stop.disabled).toBe(false);
    stop.click();
    expect(channel.cancel).toHaveBeenCalledWith('gen-7f3a');
    expect(stop.disabled).toBe(true); // its cancel is pending
    channel.store.dispatch(fixtureAction('run_end_ok.json'));
    expect(stop.disabled).toBe(true);
    watcher.dispose();
    toolbar.dispose();
  });
});
