/**
 * The extension's commands (palette, the AIGC Lab menu, the panel's toolbar, shortcuts): one
 * definition each, acting on whatever kernel the panel follows through `ICommandHost`.
 *
 * `CommandStateWatcher` tells the registry when a command's state may have changed (a run
 * started or ended, a cancel went out, the comm opened or closed), so toolbar buttons and menu
 * items follow `isEnabled` without polling.
 */

import { TranslationBundle } from '@jupyterlab/translation';
import { clearIcon, downloadIcon, refreshIcon, stopIcon } from '@jupyterlab/ui-components';
import { CommandRegistry } from '@lumino/commands';
import { DisposableSet, IDisposable } from '@lumino/disposable';

import { aigcIcon } from './icons';
import { AckMessage } from './protocol';
import { RunState, State, Store } from './store';

/** Command ids (stable: settings, shortcuts and menus name them). */
export const CommandIDs = {
  open: 'aigc-lab:open',
  stopRun: 'aigc-lab:stop-run',
  loadHistory: 'aigc-lab:load-history',
  exportCsv: 'aigc-lab:export-csv',
  clearHistory: 'aigc-lab:clear-history'
} as const;

/** Every command, in palette and menu order. */
export const ALL_COMMANDS: readonly string[] = [
  CommandIDs.open,
  CommandIDs.stopRun,
  CommandIDs.loadHistory,
  CommandIDs.exportCsv,
  CommandIDs.clearHistory
];

/** The part of a kernel channel (`KernelChannel`) the commands use. */
export interface IRunChannel {
  readonly store: Store;
  readonly hasComm: boolean;
  cancel(run: string): Promise<AckMessage>;
  requestHistory(): boolean;
}

/** What the commands act on: the panel and the channel it follows. */
export interface ICommandHost {
  /** The followed kernel's channel, or null when no notebook kernel is followed. */
  readonly channel: IRunChannel | null;
  /** Show the panel. */
  open(): void;
  /** Forget the followed kernel's ended runs. */
  clearHistory(): void;
  /** Download the run history as CSV. */
  exportCsv(): void;
}

/**
 * The run "Stop current run" stops: the newest running run of the followed kernel, or null when
 * none runs or a cancel of that run is already waiting for its answer.
 */
export function currentRun(state: State): RunState | null {
  for (let k = state.order.length - 1; k >= 0; k--) {
    const run = state.runs[state.order[k]];
    if (run !== undefined && run.status === 'running') {
      return run.cancel?.state === 'pending' ? null : run;
    }
  }
  return null;
}

/** Register every command on `commands`; dispose the result to remove them. */
export function registerCommands(
  commands: CommandRegistry,
  host: ICommandHost,
  trans: TranslationBundle
): IDisposable {
  const set = new DisposableSet();
  const running = (): RunState | null => {
    const channel = host.channel;
    return channel === null ? null : currentRun(channel.store.state);
  };
  set.add(
    commands.addCommand(CommandIDs.open, {
      label: trans.__('Open AIGC Lab Panel'),
      caption: trans.__('Show the AIGC Lab side panel'),
      icon: aigcIcon,
      execute: () => host.open()
    })
  );
  set.add(
    commands.addCommand(CommandIDs.stopRun, {
      label: trans.__('Stop Current Run'),
      caption: trans.__('Ask the kernel to stop the newest running aigc_lab run'),
      icon: stopIcon,
      className: 'aigc-stop-run',
      isEnabled: () => running() !== null,
      execute: async (): Promise<AckMessage | null> => {
        const channel = host.channel;
        const run = running();
        if (channel === null || run === null) {
          return null;
        }
        try {
          return await channel.cancel(run.id);
        } catch (e) {
          // the store records the failure; the panel's live region and the card say it
          console.warn(`[aigc-lab] cancel of ${run.id} failed`, e);
          return null;
        }
      }
    })
  );
  set.add(
    commands.addCommand(CommandIDs.loadHistory, {
      label: trans.__('Reload AIGC Lab Runs from the Kernel'),
      caption: trans.__('Ask the kernel to replay its recorded runs'),
      icon: refreshIcon,
      className: 'aigc-load-history',
      isEnabled: () => host.channel?.hasComm ?? false,
      execute: () => host.channel?.requestHistory() ?? false
    })
  );
  set.add(
    commands.addCommand(CommandIDs.exportCsv, {
      label: trans.__('Export AIGC Lab Run History as CSV'),
      caption: trans.__('Download the run history table as a CSV file'),
      icon: downloadIcon,
      className: 'aigc-export-csv',
      isEnabled: () => host.channel !== null,
      execute: () => host.exportCsv()
    })
  );
  set.add(
    commands.addCommand(CommandIDs.clearHistory, {
      label: trans.__('Clear AIGC Lab Run History'),
      caption: trans.__('Forget the runs that ended (running runs stay)'),
      icon: clearIcon,
      className: 'aigc-clear',
      isEnabled: () => host.channel !== null,
      execute: () => host.clearHistory()
    })
  );
  return set;
}

/** Re-evaluates the commands' state when the followed channel's runs or comm change. */
export class CommandStateWatcher implements IDisposable {
  constructor(commands: CommandRegistry) {
    this._commands = commands;
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  /** Watch `channel` (the one the panel now follows). */
  follow(channel: IRunChannel | null): void {
    this._unsubscribe?.();
    this._unsubscribe = null;
    this._channel = channel;
    if (channel !== null) {
      this._unsubscribe = channel.store.subscribe(() => this._refresh(false));
    }
    this._refresh(true);
  }

  dispose(): void {
    this._unsubscribe?.();
    this._unsubscribe = null;
    this._disposed = true;
  }

  private _refresh(force: boolean): void {
    const channel = this._channel;
    // Cheap on every store change (a token batch): notify only when the inputs of isEnabled move.
    const key =
      channel === null ? '' : `${currentRun(channel.store.state)?.id ?? '-'}|${channel.hasComm}`;
    if (!force && key === this._key) {
      return;
    }
    this._key = key;
    for (const id of ALL_COMMANDS) {
      if (this._commands.hasCommand(id)) {
        this._commands.notifyCommandChanged(id);
      }
    }
  }

  private _commands: CommandRegistry;
  private _channel: IRunChannel | null = null;
  private _unsubscribe: (() => void) | null = null;
  private _key = '';
  private _disposed = false;
}
