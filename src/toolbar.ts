/**
 * The panel's Lumino toolbar: one icon button per command (the command's icon; its caption, and
 * shortcut, as the button's accessible name and tooltip; disabled while the command's
 * `isEnabled` is false, updated on `commandChanged` / `keyBindingChanged`).
 *
 * Each button is a plain `<button>` widget: JupyterLab's `ToolbarButton` renders a `<jp-button>`
 * whose inner shadow-DOM button has no accessible name and carries `aria-pressed` on a
 * non-toggle button (axe-core: button-name, aria-allowed-attr).
 *
 * DOM contract: `.aigc-toolbar button.aigc-command[data-command]`, plus each command's class
 * (`aigc-stop-run`, `aigc-load-history`, `aigc-export-csv`, `aigc-clear`).
 */

import { TranslationBundle } from '@jupyterlab/translation';
import { LabIcon, Toolbar } from '@jupyterlab/ui-components';
import { CommandRegistry } from '@lumino/commands';
import { Widget } from '@lumino/widgets';

import { CommandIDs } from './commands';

/** Toolbar items, by name (the names settings' toolbar definitions would use). */
const ITEMS: readonly [string, string][] = [
  ['stop-run', CommandIDs.stopRun],
  ['load-history', CommandIDs.loadHistory],
  ['export-csv', CommandIDs.exportCsv],
  ['clear-history', CommandIDs.clearHistory]
];

/** The tooltip of command `id`: its caption (or label), and its shortcut if it has one. */
export function commandTooltip(commands: CommandRegistry, id: string): string {
  const caption = commands.caption(id) || commands.label(id);
  const binding = commands.keyBindings.find(b => b.command === id);
  return binding === undefined
    ? caption
    : `${caption} (${binding.keys.map(k => CommandRegistry.formatKeystroke(k)).join(', ')})`;
}

/** A toolbar button that runs a command and follows its state. */
export class CommandButton extends Widget {
  constructor(commands: CommandRegistry, id: string) {
    super({ node: document.createElement('button') });
    this._commands = commands;
    this._id = id;
    const node = this.button;
    node.type = 'button';
    node.setAttribute('data-command', id);
    this.addClass('jp-ToolbarButtonComponent');
    this.addClass('aigc-command');
    node.addEventListener('click', () => {
      if (this._commands.isEnabled(this._id)) {
        void this._commands.execute(this._id);
      }
    });
    commands.commandChanged.connect(this._onCommandChanged, this);
    commands.keyBindingChanged.connect(this._refresh, this);
    this._refresh();
  }

  get button(): HTMLButtonElement {
    return this.node as HTMLButtonElement;
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._commands.commandChanged.disconnect(this._onCommandChanged, this);
    this._commands.keyBindingChanged.disconnect(this._refresh, this);
    super.dispose();
  }

  private _onCommandChanged(_: CommandRegistry, args: CommandRegistry.ICommandChangedArgs): void {
    if (args.id === undefined || args.id === this._id) {
      this._refresh();
    }
  }

  private _refresh(): void {
    const { _commands: commands, _id: id } = this;
    if (!commands.hasCommand(id)) {
      return;
    }
    const node = this.button;
    const extra = commands.className(id);
    if (extra !== this._class) {
      if (this._class) {
        this.removeClass(this._class);
      }
      if (extra) {
        this.addClass(extra);
      }
      this._class = extra;
    }
    const name = commandTooltip(commands, id);
    if (node.title !== name) {
      node.title = name;
      node.setAttribute('aria-label', name);
    }
    const disabled = !commands.isEnabled(id);
    if (node.disabled !== disabled) {
      node.disabled = disabled;
    }
    const icon = commands.icon(id);
    if (icon instanceof LabIcon && icon !== this._icon) {
      this._icon = icon;
      node.replaceChildren(icon.element({ tag: 'span', className: 'aigc-command-icon' }));
    }
  }

  private _commands: CommandRegistry;
  private _id: string;
  private _class = '';
  private _icon: LabIcon | null = null;
}

/** A labelled toolbar of icon buttons for the panel's commands (register them first). */
export function createPanelToolbar(commands: CommandRegistry, trans: TranslationBundle): Toolbar {
  const toolbar = new Toolbar();
  toolbar.addClass('aigc-toolbar');
  toolbar.node.setAttribute('aria-label', trans.__('AIGC Lab actions'));
  for (const [name, id] of ITEMS) {
    toolbar.addItem(name, new CommandButton(commands, id));
  }
  return toolbar;
}
