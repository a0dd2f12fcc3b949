// jsdom lacks a few browser globals that Lumino touches at import time.
if (typeof window !== 'undefined' && typeof MouseEvent !== 'undefined') {
  const g = globalThis as { DragEvent?: unknown };
  if (g.DragEvent === undefined) {
    g.DragEvent = class DragEvent extends MouseEvent {};
  }
}
