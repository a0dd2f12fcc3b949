// @vitest-environment jsdom
import type { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { Panel, Widget } from '@lumino/widgets';
import { describe, expect, it, vi } from 'vitest';

import {
  IRendererSource,
  IWidgetHost,
  RegistryWidgetHost,
  STUDIO_MIME,
  STUDIO_RANK,
  StudioRenderer,
  WIDGET_VIEW_MIME,
  studioRendererFactory,
  widgetModelId
} from '../staticfallback';

const SUMMARY =
  "<div class='aigc-lab-studio-summary'><b>aigc-lab Studio</b><script>bad()</script></div>";

/** Strips <script> like JupyterLab's sanitizer does (enough for these tests). */
const sanitizer: IRenderMime.ISanitizer = {
  sanitize: (html: string) => html.replace(/<script>.*?<\/script>/g, '')
};

function options(): IRenderMime.IRendererOptions {
  return {
    mimeType: STUDIO_MIME,
    sanitizer,
    resolver: null,
    linkHandler: null,
    latexTypesetter: null
  };
}

function mimeModel(trusted: boolean, modelId = 'abc'): IRenderMime.IMimeModel {
  return {
    trusted,
    data: {
      [WIDGET_VIEW_MIME]: { version_major: 2, version_minor: 0, model_id: modelId },
      'text/html': SUMMARY,
      'text/plain': 'aigc-lab Studio',
      [STUDIO_MIME]: { version: 1, model_id: modelId }
    },
    metadata: {},
    setData: () => undefined
  };
}

/** Stands in for ipywidgets' WidgetRenderer: a view when the model is known, else an error text. */
class FakeWidgetRenderer extends Panel implements IRenderMime.IRenderer {
  constructor(private known: Set<string>) {
    super();
  }
  view: Widget | null = null;
  async renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    this.node.textContent = 'Loading widget...';
    await Promise.resolve();
    const id = widgetModelId(model.data);
    if (id === null || !this.known.has(id)) {
      this.node.textContent = 'Error displaying widget: model not found';
      return;
    }
    this.node.textContent = '';
    this.view = new Widget();
    this.view.addClass('widget-tab');
    this.addWidget(this.view);
  }
}

class FakeHost implements IWidgetHost {
  constructor(
    public ready: boolean,
    public known = new Set<string>()
  ) {}
  created: FakeWidgetRenderer[] = [];
  private waiters: Array<(ok: boolean) => void> = [];
  isReady(): boolean {
    return this.ready;
  }
  whenReady(): Promise<boolean> {
    return this.ready ? Promise.resolve(true) : new Promise(resolve => this.waiters.push(resolve));
  }
  becomeReady(): void {
    this.ready = true;
    this.waiters.splice(0).forEach(resolve => resolve(true));
  }
  createWidgetRenderer(): IRenderMime.IRenderer {
    const r = new FakeWidgetRenderer(this.known);
    this.created.push(r);
    return r;
  }
}

const flush = () => new Promise(resolve => setTimeout(resolve, 0));
const visible = (w: Widget) => !w.isHidden;
const summaryOf = (r: StudioRenderer) =>
  r.node.querySelector('.aigc-studio-summary') as HTMLElement;

describe('StudioRenderer', () => {
  it('shows the live widget while the manager has the model', async () => {
    const host = new FakeHost(true, new Set(['abc']));
    const r = new StudioRenderer(options(), host);
    await r.renderModel(mimeModel(true));
    expect(r.view).toBe('live');
    expect(r.node.getAttribute('data-aigc-studio-view')).toBe('live');
    expect(visible(host.created[0])).toBe(true);
    expect(summaryOf(r).classList.contains('lm-mod-hidden')).toBe(true);
    // An update of the same Studio (a new summary) keeps the same live view.
    await r.renderModel(mimeModel(true));
    expect(host.created.length).toBe(1);
    expect(r.view).toBe('live');
    expect(summaryOf(r).innerHTML).toContain('aigc-lab Studio');
  });

  it('shows the sanitized summary, not "model not found", when the model is gone', async () => {
    const host = new FakeHost(true);
    const r = new StudioRenderer(options(), host);
    await r.renderModel(mimeModel(true));
    await flush();
    expect(r.view).toBe('summary');
    expect(summaryOf(r).classList.contains('lm-mod-hidden')).toBe(false);
    expect(summaryOf(r).innerHTML).toContain('<b>aigc-lab Studio</b>');
    expect(summaryOf(r).innerHTML).not.toContain('script');
    expect(host.created[0].isHidden).toBe(true); // its error text stays out of sight
  });

  it('does not flash the summary while the manager looks the model up', async () => {
    let release: () => void = () => undefined;
    const gate = new Promise<void>(resolve => (release = resolve));
    class SlowRenderer extends FakeWidgetRenderer {
      async renderModel(model: IRenderMime.IMimeModel): Promise<void> {
        this.node.textContent = 'Loading widget...';
        await gate;
        return super.renderModel(model);
      }
    }
    const host = new FakeHost(true, new Set(['abc']));
    host.createWidgetRenderer = () => new SlowRenderer(host.known);
    const r = new StudioRenderer(options(), host);
    const done = r.renderModel(mimeModel(true));
    await flush();
    expect(r.view).toBe('pending');
    expect(r.node.getAttribute('data-aigc-studio-settled')).toBe('false');
    expect(summaryOf(r).classList.contains('lm-mod-hidden')).toBe(true);
    release();
    await done;
    expect(r.view).toBe('live');
    expect(r.node.getAttribute('data-aigc-studio-settled')).toBe('true');
  });

  it('shows the summary until a widget manager appears, then the live widget', async () => {
    const host = new FakeHost(false, new Set(['abc']));
    const r = new StudioRenderer(options(), host);
    const done = r.renderModel(mimeModel(true));
    await flush();
    expect(r.view).toBe('summary');
    expect(r.node.getAttribute('data-aigc-studio-settled')).toBe('false'); // a manager may still come
    expect(host.created.length).toBe(0);
    host.becomeReady();
    await done;
    expect(r.view).toBe('live');
    expect(r.node.getAttribute('data-aigc-studio-settled')).toBe('true');
  });

  it('goes back to the summary when the live view is disposed (kernel restart)', async () => {
    const host = new FakeHost(true, new Set(['abc']));
    const r = new StudioRenderer(options(), host);
    await r.renderModel(mimeModel(true));
    expect(r.view).toBe('live');
    host.created[0].view?.dispose();
    await flush(); // MutationObserver callbacks run as microtasks
    expect(r.view).toBe('summary');
  });

  it('never delegates an untrusted output', async () => {
    const host = new FakeHost(true, new Set(['abc']));
    const r = new StudioRenderer(options(), host);
    await r.renderModel(mimeModel(false));
    expect(r.view).toBe('summary');
    expect(r.node.getAttribute('data-aigc-studio-settled')).toBe('true');
    expect(host.created.length).toBe(0);
  });

  it('falls back to text/plain without html', async () => {
    const r = new StudioRenderer(options(), null);
    const m = mimeModel(true);
    delete (m.data as Record<string, unknown>)['text/html'];
    await r.renderModel(m);
    expect(summaryOf(r).textContent).toBe('aigc-lab Studio');
  });
});

describe('RegistryWidgetHost', () => {
  it('is ready once the widget-view factory replaces the placeholder', async () => {
    vi.useFakeTimers();
    try {
      const placeholder: IRenderMime.IRendererFactory = {
        safe: false,
        mimeTypes: [WIDGET_VIEW_MIME],
        createRenderer: () => new FakeWidgetRenderer(new Set())
      };
      let current: IRenderMime.IRendererFactory | undefined = placeholder;
      const registry: IRendererSource = {
        getFactory: () => current,
        createRenderer: () => new FakeWidgetRenderer(new Set())
      };
      const host = new RegistryWidgetHost(registry, { pollMs: 10 });
      expect(host.isReady()).toBe(false);
      let ready: boolean | null = null;
      void host.whenReady().then(v => (ready = v));
      await vi.advanceTimersByTimeAsync(100);
      expect(ready).toBe(null);
      current = { ...placeholder }; // what jupyterlab-manager does once the session is ready
      await vi.advanceTimersByTimeAsync(1000);
      expect(ready).toBe(true);
      expect(host.isReady()).toBe(true);
      const other = new RegistryWidgetHost({
        getFactory: () => undefined,
        createRenderer: registry.createRenderer
      });
      let gone: boolean | null = null;
      void other.whenReady().then(v => (gone = v));
      other.dispose();
      await vi.advanceTimersByTimeAsync(10);
      expect(gone).toBe(false); // no ipywidgets at all: never ready
    } finally {
      vi.useRealTimers();
    }
  });

  it('factory wins over the widget-view renderer and is safe', () => {
    const f = studioRendererFactory(null);
    expect(f.mimeTypes).toEqual([STUDIO_MIME]);
    expect(STUDIO_RANK).toBeLessThan(-10);
    expect(f.safe).toBe(true);
  });
});
