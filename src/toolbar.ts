/**
 * The panel's Lumino toolbar: one icon button per command (icon, caption and shortcut as its
 * label and tooltip, enabled as the command's `isEnabled`, updated on `commandChanged`).
 *
 * Plain `ToolbarButton`s (a `<button>` element, keeping the panel's DOM contract
 * `button.aigc-export-csv` etc.) rather than `CommandToolbarButton` (a `<jp-button>` element).
 */

import { TranslationBundle } from '@jupyterlab/translation';
import { LabIcon, Toolbar, ToolbarButton } from '@jupyterlab/ui-components';
import { CommandRegistry } from '@lumino/commands';

import { CommandIDs } from './commands';

/** Toolbar items, by name (the names settings' toolbar definitions would use). */
const ITEMS: readonly [string, string][] = [
  ['stop-run', CommandIDs.stopRun],
  ['load-history', CommandIDs.loadHistory],
  ['export-csv', CommandIDs.exportCsv],
  ['clear-history', CommandIDs.clearHistory]
];

/** The tooltip of command `id`: its caption, and its shortcut if it has one. */
function tooltip(commands: CommandRegistry, id: string): string {
  const caption = commands.caption(id) || commands.label(id);
  const binding = commands.keyBindings.find(b => b.command === id);
  return binding === undefined
    ? caption
    : `${caption} (${binding.keys.map(k => CommandRegistry.formatKeystroke(k)).join(', ')})`;
}

/** A toolbar button that runs command `id` and follows its enabled state. */
export function commandButton(commands: CommandRegistry, id: string): ToolbarButton {
  const icon = commands.icon(id);
  const button = new ToolbarButton({
    className: commands.className(id),
    icon: icon instanceof LabIcon ? icon : undefined,
    tooltip: tooltip(commands, id),
    dataset: { command: id },
    enabled: commands.isEnabled(id),
    onClick: () => void commands.execute(id)
  });
  const onChanged = (_: CommandRegistry, args: CommandRegistry.ICommandChangedArgs): void => {
    if (args.id === undefined || args.id === id) {
      const enabled = commands.isEnabled(id);
      if (button.enabled !== enabled) {
        button.enabled = enabled;
      }
    }
  };
  commands.commandChanged.connect(onChanged);
  button.disposed.connect(() => commands.commandChanged.disconnect(onChanged));
  return button;
}

/** A labelled toolbar of icon buttons for the panel's commands. */
export function createPanelToolbar(commands: CommandRegistry, trans: TranslationBundle): Toolbar {
  const toolbar = new Toolbar();
  toolbar.addClass('aigc-toolbar');
  toolbar.node.setAttribute('aria-label', trans.__('AIGC Lab actions'));
  for (const [name, id] of ITEMS) {
    toolbar.addItem(name, commandButton(commands, id));
  }
  return toolbar;
}
