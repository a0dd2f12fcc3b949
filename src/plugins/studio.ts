/**
 * The Studio renderer plugin: in every notebook, `al.Studio()` outputs show the live widget
 * while the widget manager has its model, else their static summary (src/staticfallback.ts).
 * Independent of the side panel: either works without the other.
 */

import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';

import { StudioFallbackExtension } from '../staticfallback';

export const studioRendererPlugin: JupyterFrontEndPlugin<void> = {
  id: 'aigc-lab:studio-renderer',
  description: 'Renders aigc-lab Studio outputs: the live widget, or its saved summary.',
  autoStart: true,
  activate: (app: JupyterFrontEnd): void => {
    app.docRegistry.addWidgetExtension('Notebook', new StudioFallbackExtension());
  }
};
