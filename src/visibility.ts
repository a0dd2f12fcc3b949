/**
 * Which elements are on screen, for rendering only what can be seen (an IntersectionObserver).
 *
 * An element counts as visible until the observer says otherwise (so a new card renders at once,
 * without waiting a frame for the first report), and again whenever `reset` is called for it (a
 * card shown again). Without IntersectionObserver (jsdom, old browsers) everything is visible.
 */

export class VisibilityWatch {
  /** `onChange(el, visible)` is called when the observer reports a change for `el`. */
  constructor(onChange: (el: Element, visible: boolean) => void) {
    this._onChange = onChange;
    if (typeof IntersectionObserver !== 'undefined') {
      this._observer = new IntersectionObserver(entries => this._report(entries));
    }
  }

  observe(el: Element): void {
    if (this._observer !== null && !this._watched.has(el)) {
      this._watched.add(el);
      this._observer.observe(el);
    }
  }

  unobserve(el: Element): void {
    if (this._observer !== null && this._watched.delete(el)) {
      this._observer.unobserve(el);
    }
    this._hidden.delete(el);
  }

  /** Count `el` as visible again until the next report (it was just shown). */
  reset(el: Element): void {
    this._hidden.delete(el);
  }

  isVisible(el: Element): boolean {
    return !this._hidden.has(el);
  }

  dispose(): void {
    this._observer?.disconnect();
    this._observer = null;
    this._watched.clear();
  }

  private _report(entries: IntersectionObserverEntry[]): void {
    for (const e of entries) {
      const visible = e.isIntersecting;
      const was = !this._hidden.has(e.target);
      if (visible) {
        this._hidden.delete(e.target);
      } else {
        this._hidden.add(e.target);
      }
      if (visible !== was) {
        this._onChange(e.target, visible);
      }
    }
  }

  private _onChange: (el: Element, visible: boolean) => void;
  private _observer: IntersectionObserver | null = null;
  private _watched = new Set<Element>();
  private _hidden = new WeakSet<Element>();
}
