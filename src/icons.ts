/** The extension's own icons (JupyterLab's are used for stop, refresh, download and clear). */

import { LabIcon } from '@jupyterlab/ui-components';

/** The panel's sidebar tab and palette icon: lines of streamed text and a cursor. */
export const aigcIcon = new LabIcon({
  name: 'aigc-lab:icon',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">' +
    '<g class="jp-icon3" fill="#616161">' +
    '<path d="M3 4h18v2H3zM3 9h12v2H3zM3 14h15v2H3zM3 19h8v2H3z"/>' +
    '<circle cx="19" cy="20" r="2"/></g></svg>'
});
