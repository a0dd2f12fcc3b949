/**
 * Translation: every string the extension shows goes through a `TranslationBundle` of the
 * `aigc_lab` domain, loaded from JupyterLab's `ITranslator` (language packs) or, without one
 * (unit tests, a shell without the translation plugin), from `nullTranslator` (English as written).
 */

import { ITranslator, TranslationBundle, nullTranslator } from '@jupyterlab/translation';

/** The gettext domain of this extension's strings (the Python package name, by convention). */
export const I18N_DOMAIN = 'aigc_lab';

/** The bundle of `translator`, or the untranslated one. */
export function translationBundle(translator?: ITranslator | null): TranslationBundle {
  return (translator ?? nullTranslator).load(I18N_DOMAIN);
}
