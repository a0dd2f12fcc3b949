/**
 * aigc-lab JupyterLab extension: a right-sidebar panel that follows the active notebook's
 * kernel and shows its aigc_lab runs live (token stream, metrics, training progress).
 */

import {
  ILabShell,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { LabIcon } from '@jupyterlab/ui-components';

import { ChannelManager } from './channel';
import { AigcLabPanel, PANEL_ID } from './panel';

export { PROTOCOL_VERSION, parseMessage } from './protocol';

const OPEN_COMMAND = 'aigc-lab:open';

const aigcIcon = new LabIcon({
  name: 'aigc-lab:icon',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">' +
    '<g class="jp-icon3" fill="#616161">' +
    '<path d="M3 4h18v2H3zM3 9h12v2H3zM3 14h15v2H3zM3 19h8v2H3z"/>' +
    '<circle cx="19" cy="20" r="2"/></g></svg>'
});

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'aigc-lab:plugin',
  description: 'Live aigc-lab runs (token streams, metrics, training) in a side panel.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ICommandPalette, ILabShell],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    palette: ICommandPalette | null,
    labShell: ILabShell | null
  ): void => {
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
    if (palette) {
      palette.addItem({ command: OPEN_COMMAND, category: 'AIGC Lab' });
    }

    // Visible without a click: open it once the saved layout has been restored (which may
    // otherwise collapse the right sidebar again).
    void app.restored.then(() => {
      if (labShell) {
        labShell.activateById(PANEL_ID);
      } else {
        app.shell.activateById(PANEL_ID);
      }
    });
  }
};

export default plugin;
