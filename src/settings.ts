/** The panel's settings as read from the setting registry (schema/plugin.json), checked. */

import { ISettingRegistry } from '@jupyterlab/settingregistry';

import { DEFAULT_SETTINGS, PanelSettings } from './panel';

/** Settings from the registry, with defaults for what is missing or malformed. */
export function readSettings(settings: ISettingRegistry.ISettings): PanelSettings {
  const c = settings.composite;
  const num = (key: string, fallback: number, min: number): number => {
    const v = c[key];
    return typeof v === 'number' && Number.isFinite(v) ? Math.max(min, Math.floor(v)) : fallback;
  };
  const tint = c['tinting'];
  return {
    historySize: num('historySize', DEFAULT_SETTINGS.historySize, 1),
    tinting: typeof tint === 'boolean' ? tint : DEFAULT_SETTINGS.tinting,
    chartWindow: num('chartWindow', DEFAULT_SETTINGS.chartWindow, 0),
    tokensPerRun: num('tokensPerRun', DEFAULT_SETTINGS.tokensPerRun, 1)
  };
}
