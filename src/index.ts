/**
 * aigc-lab JupyterLab extension: a right-sidebar panel that follows the active notebook's
 * kernel and shows its aigc_lab runs live (token stream, metrics, training progress).
 */

import {
  ILabShell,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, IThemeManager } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { LabIcon } from '@jupyterlab/ui-components';

import { ChannelManager } from './channel';
import { AigcLabPanel, DEFAULT_SETTINGS, PANEL_ID, PanelSettings } from './panel';
import { StudioFallbackExtension } from './staticfallback';

export { PROTOCOL_VERSION, parseMessage } from './protocol';

const PLUGIN_ID = 'aigc-lab:plugin';
const OPEN_COMMAND = 'aigc-lab:open';
const CLEAR_COMMAND = 'aigc-lab:clear-history';
const EXPORT_COMMAND = 'aigc-lab:export-csv';
const HISTORY_COMMAND = 'aigc-lab:load-history';

/** Settings from the registry, checked (schema/plugin.json), with defaults for what is missing. */
function readSettings(settings: ISettingRegistry.ISettings): PanelSettings {
  const c = settings.composite;
  const num = (key: string, fallback: number, min: number): number => {
    const v = c[key];
    return typeof v === 'number' && Number.isFinite(v) ? Math.max(min, Math.floor(v)) : fallback;
  };
  const tint = c['tinting'];
  return {
    historySize: num('historySize', DEFAULT_SETTINGS.historySize, 1),
    tinting: typeof tint === 'boolean' ? tint : DEFAULT_SETTINGS.tinting,
    chartWindow: num('chartWindow', DEFAULT_SETTINGS.chartWindow, 0)
  };
}

const aigcIcon = new LabIcon({
  name: 'aigc-lab:icon',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">' +
    '<g class="jp-icon3" fill="#616161">' +
    '<path d="M3 4h18v2H3zM3 9h12v2H3zM3 14h15v2H3zM3 19h8v2H3z"/>' +
    '<circle cx="19" cy="20" r="2"/></g></svg>'
});

/** Width the right sidebar gets when the panel opens narrower than that. */
const PANEL_WIDTH = 430;

/** The shell's left | main | right split panel (not public API: feature-detected). */
interface HSplit {
  node: HTMLElement;
  relativeSizes(): number[];
  setRelativeSizes(sizes: number[]): void;
}

/**
 * Widen the right sidebar to `width` px when the panel is narrower (JupyterLab gives sidebars a
 * fixed default that is too narrow for charts). Does nothing when the shell is laid out in a way
 * it does not recognise; the user can always drag the splitter.
 */
function widenRightArea(shell: JupyterFrontEnd.IShell, panelNode: HTMLElement, width: number): boolean {
  const split = (shell as unknown as { _hsplitPanel?: Partial<HSplit> })._hsplitPanel;
  if (
    split === undefined ||
    typeof split.relativeSizes !== 'function' ||
    typeof split.setRelativeSizes !== 'function' ||
    !(split.node instanceof HTMLElement)
  ) {
    return true; // nothing to do here, ever
  }
  const current = panelNode.getBoundingClientRect().width;
  if (current <= 0) {
    return false; // not laid out yet: try again
  }
  const total = split.node.clientWidth;
  const sizes = split.relativeSizes();
  if (current >= width || sizes.length !== 3 || total < 3 * width) {
    return true;
  }
  const sum = sizes.reduce((a, b) => a + b, 0);
  const grow = ((width - current) / total) * sum;
  if (sizes[1] - grow > 0) {
    split.setRelativeSizes([sizes[0], sizes[1] - grow, sizes[2] + grow]);
  }
  return true;
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Live aigc-lab runs (token streams, metrics, training) in a side panel.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ICommandPalette, ILabShell, ISettingRegistry, IThemeManager],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    palette: ICommandPalette | null,
    labShell: ILabShell | null,
    settingRegistry: ISettingRegistry | null,
    themeManager: IThemeManager | null
  ): void => {
    // Studio outputs: the live widget while its model exists, else the static summary.
    app.docRegistry.addWidgetExtension('Notebook', new StudioFallbackExtension());

    const manager = new ChannelManager();
    const panel = new AigcLabPanel();
    panel.title.icon = aigcIcon;

    // Show the runs of the active notebook's kernel.
    const followCurrent = (): void => {
      const nb = tracker.currentWidget;
      const kernel = nb?.sessionContext.session?.kernel ?? null;
      panel.follow(kernel !== null ? manager.channelFor(kernel) : null);
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

    app.shell.add(panel, 'right', { rank: 1000 });

    app.commands.addCommand(OPEN_COMMAND, {
      label: 'Open AIGC Lab Panel',
      caption: 'Show the AIGC Lab side panel',
      execute: () => {
        if (!panel.isAttached) {
          app.shell.add(panel, 'right', { rank: 1000 });
        }
        app.shell.activateById(panel.id);
      }
    });
    app.commands.addCommand(CLEAR_COMMAND, {
      label: 'Clear AIGC Lab Run History',
      caption: 'Forget the ended runs of the followed kernel (running runs stay)',
      execute: () => panel.clearHistory()
    });
    app.commands.addCommand(EXPORT_COMMAND, {
      label: 'Export AIGC Lab Run History as CSV',
      caption: 'Download the run history table of the followed kernel as a CSV file',
      execute: () => panel.exportCsv()
    });
    app.commands.addCommand(HISTORY_COMMAND, {
      label: 'Reload AIGC Lab Runs from the Kernel',
      caption: 'Ask the kernel to replay its recorded runs (history request)',
      isEnabled: () => panel.channel?.hasComm ?? false,
      execute: () => panel.channel?.requestHistory() ?? false
    });
    if (palette) {
      for (const command of [OPEN_COMMAND, CLEAR_COMMAND, EXPORT_COMMAND, HISTORY_COMMAND]) {
        palette.addItem({ command, category: 'AIGC Lab' });
      }
    }

    if (settingRegistry) {
      settingRegistry
        .load(PLUGIN_ID)
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

    // Visible without a click: open it once the saved layout has been restored (which may
    // otherwise collapse the right sidebar again), wide enough for its charts and table.
    void app.restored.then(() => {
      if (labShell) {
        labShell.activateById(PANEL_ID);
      } else {
        app.shell.activateById(PANEL_ID);
      }
      // Once laid out: the sidebar expands (and may restore a remembered size) asynchronously,
      // so check a few times during the first seconds; a no-op once it is wide enough.
      for (const delay of [0, 250, 750, 1500, 3000]) {
        setTimeout(() => widenRightArea(app.shell, panel.node, PANEL_WIDTH), delay);
      }
    });
  }
};

export default plugin;
