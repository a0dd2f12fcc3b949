/**
 * aigc-lab JupyterLab extension: its plugins.
 *
 * - `aigc-lab:plugin` (src/plugins/panel.ts): the side panel that follows the active notebook's
 *   kernel and shows its aigc_lab runs live, its commands, toolbar, menu, shortcut and settings;
 * - `aigc-lab:studio-renderer` (src/plugins/studio.ts): Studio outputs in notebooks.
 */

import { JupyterFrontEndPlugin } from '@jupyterlab/application';

import { panelPlugin } from './plugins/panel';
import { studioRendererPlugin } from './plugins/studio';

export { PROTOCOL_VERSION, parseMessage } from './protocol';

const plugins: JupyterFrontEndPlugin<void>[] = [panelPlugin, studioRendererPlugin];

export default plugins;
