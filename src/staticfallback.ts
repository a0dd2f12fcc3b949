/**
 * Static fallback for `al.Studio()` outputs in notebooks.
 *
 * The Studio's mimebundle carries the ipywidgets view (`application/vnd.jupyter.widget-view+json`),
 * a `text/html` summary, and our marker `application/vnd.aigc-lab.studio+json`. In each notebook we
 * register a renderer for the marker whose rank (-20) wins over the widget-view renderer of
 * @jupyter-widgets/jupyterlab-manager (-10). It delegates to that notebook's widget-view renderer and
 * shows the live widget while the widget manager has the model; otherwise (no kernel, a new kernel,
 * no saved widget state, an untrusted output) it shows the sanitized HTML summary instead of
 * "Error displaying widget: model not found".
 *
 * How the live path is found: jupyterlab-manager first clones a placeholder widget-view factory (no
 * widget manager) into every notebook's registry, and replaces it with one bound to the notebook's
 * widget manager once the session is ready. So "the factory differs from the one present when the
 * notebook was created" means "a widget manager is attached". Until then only the summary shows.
 */

import type { DocumentRegistry } from '@jupyterlab/docregistry';
import type { INotebookModel, NotebookPanel } from '@jupyterlab/notebook';
import type { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { IDisposable } from '@lumino/disposable';
import { Panel, Widget } from '@lumino/widgets';

/** The marker mimetype the Studio adds to its display data (see aigc_lab/jupyter/studio/app.py). */
export const STUDIO_MIME = 'application/vnd.aigc-lab.studio+json';
/** The ipywidgets view mimetype. */
export const WIDGET_VIEW_MIME = 'application/vnd.jupyter.widget-view+json';
/** Lower ranks win; jupyterlab-manager registers the widget-view renderer at -10. */
export const STUDIO_RANK = -20;

/** How long a Studio output may stay blank while the widget manager looks its model up. */
export const PENDING_MS = 1500;

/** The part of a rendermime registry used here (structural, so tests can pass a fake). */
export interface IRendererSource {
  getFactory(mimeType: string): IRenderMime.IRendererFactory | undefined;
  createRenderer(mimeType: string): IRenderMime.IRenderer;
}

/** Where a Studio renderer gets the live widget renderer from: one per notebook. */
export interface IWidgetHost {
  /** True once a widget-view renderer bound to a widget manager can be created. */
  isReady(): boolean;
  /** Resolves true when ready, false when the host is disposed first. */
  whenReady(): Promise<boolean>;
  /** A widget-view renderer of the notebook's registry (call only when ready). */
  createWidgetRenderer(): IRenderMime.IRenderer;
}

/**
 * The widget host of one notebook registry: ready when the widget-view factory is no longer the
 * placeholder that was there at creation (see the module comment). Polls cheaply until then.
 */
export class RegistryWidgetHost implements IWidgetHost, IDisposable {
  constructor(
    registry: IRendererSource,
    options: { alreadyReady?: boolean; pollMs?: number } = {}
  ) {
    this._registry = registry;
    this._placeholder = options.alreadyReady
      ? null
      : (registry.getFactory(WIDGET_VIEW_MIME) ?? null);
    this._pollMs = options.pollMs ?? 100;
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  dispose(): void {
    this._disposed = true;
    if (this._timer !== null) {
      clearTimeout(this._timer);
      this._timer = null;
    }
    for (const resolve of this._waiting.splice(0)) {
      resolve(false);
    }
  }

  isReady(): boolean {
    const current = this._registry.getFactory(WIDGET_VIEW_MIME);
    return current !== undefined && current !== this._placeholder;
  }

  whenReady(): Promise<boolean> {
    if (this._disposed) {
      return Promise.resolve(false);
    }
    if (this.isReady()) {
      return Promise.resolve(true);
    }
    return new Promise<boolean>(resolve => {
      this._waiting.push(resolve);
      this._schedule(this._pollMs);
    });
  }

  createWidgetRenderer(): IRenderMime.IRenderer {
    return this._registry.createRenderer(WIDGET_VIEW_MIME);
  }

  private _schedule(delay: number): void {
    if (this._timer !== null || this._disposed) {
      return;
    }
    this._timer = setTimeout(() => {
      this._timer = null;
      if (this._disposed) {
        return;
      }
      if (this.isReady()) {
        for (const resolve of this._waiting.splice(0)) {
          resolve(true);
        }
      } else if (this._waiting.length > 0) {
        // Back off to one check per second: a notebook without a kernel may never get a manager.
        this._schedule(Math.min(1000, delay * 2));
      }
    }, delay);
  }

  private _registry: IRendererSource;
  private _placeholder: IRenderMime.IRendererFactory | null;
  private _pollMs: number;
  private _timer: ReturnType<typeof setTimeout> | null = null;
  private _waiting: Array<(ready: boolean) => void> = [];
  private _disposed = false;
}

/** The widget-view model id of a mime bundle, or null. */
export function widgetModelId(data: IRenderMime.IMimeModel['data']): string | null {
  const view = data[WIDGET_VIEW_MIME];
  if (view !== null && typeof view === 'object' && !Array.isArray(view)) {
    const id = (view as { model_id?: unknown }).model_id;
    return typeof id === 'string' && id !== '' ? id : null;
  }
  return null;
}

/**
 * Renders a Studio output: the live widget when the widget manager has its model, else the
 * sanitized `text/html` summary (or `text/plain`). Exposes `data-aigc-studio-view` = `live` |
 * `summary` | `pending`, and `data-aigc-studio-settled` = `true` once the widget manager (if any)
 * has answered for this output, `false` while it may still change the view (tests wait on it).
 */
export class StudioRenderer extends Panel implements IRenderMime.IRenderer {
  constructor(options: IRenderMime.IRendererOptions, host: IWidgetHost | null) {
    super();
    this._sanitizer = options.sanitizer;
    this._host = host;
    this.addClass('aigc-studio-output');
    this._summary = new Widget();
    this._summary.addClass('aigc-studio-summary');
    this._summary.addClass('jp-RenderedHTMLCommon');
    this.addWidget(this._summary);
    // Later changes of the widget renderer (a view restored, a view disposed by a kernel restart)
    // switch between live and summary; while pending its "Loading widget..." text must not.
    this._observer = new MutationObserver(() => {
      if (this.view !== 'pending') {
        this._decide();
      }
    });
  }

  /** Which part is visible: `live`, `summary` or `pending` (waiting to know). */
  get view(): string {
    return this.node.dataset.aigcStudioView ?? 'pending';
  }

  async renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    this._renderSummary(model);
    const id = model.trusted ? widgetModelId(model.data) : null;
    if (id === null || this._host === null) {
      this._dropInner();
      this._set('summary');
      this._settled(true);
      return;
    }
    if (this._inner !== null && this._innerId === id) {
      this._decide(); // an update of the same Studio (new summary): keep the live view
      return;
    }
    this._dropInner();
    this._innerId = id;
    this._settled(false);
    if (!this._host.isReady()) {
      this._set('summary'); // no widget manager (yet): the summary now, the widget if one comes
      const ready = await this._host.whenReady();
      if (!ready || this.isDisposed || this._innerId !== id || this._inner !== null) {
        return;
      }
    } else {
      this._set('pending'); // a moment while the manager looks the model up: no flash of summary
      setTimeout(() => {
        if (!this.isDisposed && this.view === 'pending') {
          this._decide(); // the manager is slow to answer: the summary meanwhile
        }
      }, PENDING_MS);
    }
    const inner = this._host.createWidgetRenderer();
    this._inner = inner;
    inner.hide();
    this.addWidget(inner);
    this._observer.observe(inner.node, { childList: true });
    try {
      await inner.renderModel(model);
    } catch (err) {
      console.warn('[aigc-lab] Studio widget view failed; showing its summary', err);
    }
    if (this._inner === inner) {
      this._decide();
      this._settled(true);
    }
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._observer.disconnect();
    this._inner = null;
    super.dispose();
  }

  /** Live when the widget renderer holds a rendered view (an element child), else the summary. */
  private _decide(): void {
    const inner = this._inner;
    if (inner === null || inner.isDisposed) {
      this._set('summary');
      return;
    }
    this._set(inner.node.childElementCount > 0 ? 'live' : 'summary');
  }

  private _set(view: 'live' | 'summary' | 'pending'): void {
    this.node.dataset.aigcStudioView = view;
    this._summary.setHidden(view !== 'summary');
    if (this._inner !== null) {
      this._inner.setHidden(view !== 'live');
    }
  }

  private _settled(settled: boolean): void {
    this.node.dataset.aigcStudioSettled = settled ? 'true' : 'false';
  }

  private _dropInner(): void {
    this._observer.disconnect();
    if (this._inner !== null) {
      const inner = this._inner;
      this._inner = null;
      inner.dispose();
    }
    this._innerId = null;
  }

  private _renderSummary(model: IRenderMime.IMimeModel): void {
    const html = model.data['text/html'];
    const text = model.data['text/plain'];
    const node = this._summary.node;
    if (typeof html === 'string' && html !== '') {
      // Always sanitized: the summary is plain markup, it never needs scripts or handlers.
      node.innerHTML = this._sanitizer.sanitize(html);
    } else {
      const pre = document.createElement('pre');
      pre.textContent = typeof text === 'string' ? text : 'aigc-lab Studio';
      node.replaceChildren(pre);
    }
  }

  private _sanitizer: IRenderMime.ISanitizer;
  private _host: IWidgetHost | null;
  private _summary: Widget;
  private _inner: IRenderMime.IRenderer | null = null;
  private _innerId: string | null = null;
  private _observer: MutationObserver;
}

/** A renderer factory bound to one notebook's widget host. */
export function studioRendererFactory(host: IWidgetHost | null): IRenderMime.IRendererFactory {
  return {
    safe: true, // it only ever shows sanitized HTML unless the output is trusted
    mimeTypes: [STUDIO_MIME],
    defaultRank: STUDIO_RANK,
    createRenderer: options => new StudioRenderer(options, host)
  };
}

/**
 * A notebook widget extension: registers the Studio renderer in each notebook's rendermime
 * registry as the notebook is created (before its outputs render).
 */
export class StudioFallbackExtension implements DocumentRegistry.IWidgetExtension<
  NotebookPanel,
  INotebookModel
> {
  createNew(panel: NotebookPanel, context: DocumentRegistry.IContext<INotebookModel>): IDisposable {
    const registry = panel.content.rendermime;
    // A notebook created after its session is ready (not the usual order) may have its widget
    // manager already: then any widget-view factory there counts as ready.
    const host = new RegistryWidgetHost(registry, { alreadyReady: context.sessionContext.isReady });
    registry.addFactory(studioRendererFactory(host), STUDIO_RANK);
    panel.disposed.connect(() => host.dispose());
    return host;
  }
}
