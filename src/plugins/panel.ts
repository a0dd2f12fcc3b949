/**
 * The side panel plugin: the panel in the right sidebar (restored where the user left it, never
 * forced open), its commands (palette, the AIGC Lab menu and the Stop shortcut from
 * schema/plugin.json, the panel's toolbar), settings, theme, and the kernel channels.
 *
 * The channels (one comm per notebook kernel) and their stores live here, not in the panel: runs
 * are recorded whether the panel is open, collapsed or never shown.
 */

import {
  ILabShell,
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, IThemeManager } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { ITranslator } from '@jupyterlab/translation';

import { RunAnnouncer } from '../announcer';
import { ChannelManager, KernelChannel } from '../channel';
import { ALL_COMMANDS, CommandStateWatcher, ICommandHost, registerCommands } from '../commands';
import { translationBundle } from '../i18n';
import { aigcIcon } from '../icons';
import { AigcLabPanel, PANEL_ID } from '../panel';
import { readSettings } from '../settings';
import { createPanelToolbar } from '../toolbar';
import { widenWhenShown } from '../widen';

/** The plugin id; schema/plugin.json holds its settings, menu and shortcut. */
export const PANEL_PLUGIN_ID = 'aigc-lab:plugin';

/** Rank of the panel among the right sidebar's tabs. */
const RIGHT_RANK = 1000;

export const panelPlugin: JupyterFrontEndPlugin<void> = {
  id: PANEL_PLUGIN_ID,
  description: 'Live aigc-lab runs (token streams, metrics, training) in a side panel.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [
    ILayoutRestorer,
    ITranslator,
    ICommandPalette,
    ILabShell,
    ISettingRegistry,
    IThemeManager
  ],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    restorer: ILayoutRestorer | null,
    translator: ITranslator | null,
    palette: ICommandPalette | null,
    labShell: ILabShell | null,
    settingRegistry: ISettingRegistry | null,
    themeManager: IThemeManager | null
  ): void => {
    const trans = translationBundle(translator);
    const manager = new ChannelManager();
    const announcer = new RunAnnouncer(trans);
    let panel: AigcLabPanel | null = null;
    const host: ICommandHost = {
      get channel() {
        return panel?.channel ?? null;
      },
      open: () => {
        if (panel !== null && !panel.isAttached) {
          app.shell.add(panel, 'right', { rank: RIGHT_RANK });
        }
        (labShell ?? app.shell).activateById(PANEL_ID);
      },
      clearHistory: () => panel?.clearHistory(),
      exportCsv: () => panel?.exportCsv()
    };
    // the commands first: the toolbar's buttons read their icon, caption and state
    registerCommands(app.commands, host, trans);
    const toolbar = createPanelToolbar(app.commands, trans);
    panel = new AigcLabPanel({ translator, toolbar, liveRegion: announcer.node });
    panel.title.icon = aigcIcon;
    const watcher = new CommandStateWatcher(app.commands);
    if (palette) {
      const category = trans.__('AIGC Lab');
      for (const command of ALL_COMMANDS) {
        palette.addItem({ command, category });
      }
    }

    // Show the runs of the active notebook's kernel (whether or not the panel is visible).
    const follow = (channel: KernelChannel | null): void => {
      panel.follow(channel);
      announcer.follow(panel.channel);
      watcher.follow(panel.channel);
    };
    const followCurrent = (): void => {
      const kernel = tracker.currentWidget?.sessionContext.session?.kernel ?? null;
      follow(kernel !== null ? manager.channelFor(kernel) : null);
    };
    // Register the comm target on every notebook's kernel (not only the active one), so runs
    // are recorded even while another notebook is in front.
    const watchNotebook = (nb: NotebookPanel): void => {
      manager.watch(nb.sessionContext);
      nb.sessionContext.kernelChanged.connect(() => {
        if (tracker.currentWidget === nb) {
          followCurrent();
        }
      });
    };
    tracker.forEach(watchNotebook);
    tracker.widgetAdded.connect((_, nb) => watchNotebook(nb));
    tracker.currentChanged.connect(followCurrent);
    followCurrent();

    // In the right sidebar, collapsed unless the saved layout had it open (the restorer).
    app.shell.add(panel, 'right', { rank: RIGHT_RANK });
    if (restorer) {
      restorer.add(panel, PANEL_ID);
    }
    widenWhenShown(app.shell, panel);

    if (settingRegistry) {
      settingRegistry
        .load(PANEL_PLUGIN_ID)
        .then(settings => {
          panel.settings = readSettings(settings);
          settings.changed.connect(() => {
            panel.settings = readSettings(settings);
          });
        })
        .catch((e: unknown) => {
          console.warn('[aigc-lab] could not load settings; using defaults', e);
        });
    }

    // Charts read colours from the theme's CSS variables: re-read them when the theme changes
    // (after the new theme's CSS applied: next frame).
    const retheme = () => requestAnimationFrame(() => panel.retheme());
    if (themeManager) {
      themeManager.themeChanged.connect(retheme);
    }
    new MutationObserver(retheme).observe(document.body, {
      attributes: true,
      attributeFilter: ['data-jp-theme-light', 'data-jp-theme-name']
    });
  }
};
