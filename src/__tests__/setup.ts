// jsdom lacks a few browser globals that Lumino touches at import time.
if (typeof window !== 'undefined' && typeof MouseEvent !== 'undefined') {
  const g = globalThis as { DragEvent?: unknown };
  if (g.DragEvent === undefined) {
    g.DragEvent = class DragEvent extends MouseEvent {};
  }
}

// uPlot asks matchMedia for the device pixel ratio at import time; jsdom has none.
if (typeof window !== 'undefined' && typeof window.matchMedia !== 'function') {
  const mql = {
    matches: false,
    media: '',
    onchange: null,
    addListener: () => undefined,
    removeListener: () => undefined,
    addEventListener: () => undefined,
    removeEventListener: () => undefined,
    dispatchEvent: () => false
  };
  (window as unknown as { matchMedia: (q: string) => unknown }).matchMedia = (q: string) => ({
    ...mql,
    media: q
  });
  (globalThis as unknown as { matchMedia: unknown }).matchMedia = window.matchMedia;
}
