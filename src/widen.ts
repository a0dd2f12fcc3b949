/**
 * The right sidebar opens narrower than the panel's charts need: widen it the first time the
 * panel is shown in a page (it is not forced open: it is shown where the user left it).
 */

import { JupyterFrontEnd } from '@jupyterlab/application';
import { Message, MessageLoop } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

/** Width the right sidebar gets when the panel is shown narrower than that. */
export const PANEL_WIDTH = 430;

/** The shell's left | main | right split panel (not public API: feature-detected). */
interface IHSplit {
  node: HTMLElement;
  relativeSizes(): number[];
  setRelativeSizes(sizes: number[]): void;
}

/**
 * Widen the right sidebar to `width` px when the panel is narrower. Does nothing when the shell
 * is laid out in a way it does not recognise; the user can always drag the splitter. False when
 * the panel is not laid out yet (try again).
 */
export function widenRightArea(
  shell: JupyterFrontEnd.IShell,
  panelNode: HTMLElement,
  width: number
): boolean {
  const split = (shell as unknown as { _hsplitPanel?: Partial<IHSplit> })._hsplitPanel;
  if (
    split === undefined ||
    typeof split.relativeSizes !== 'function' ||
    typeof split.setRelativeSizes !== 'function' ||
    !(split.node instanceof HTMLElement)
  ) {
    return true; // nothing to do here, ever
  }
  const current = panelNode.getBoundingClientRect().width;
  if (current <= 0) {
    return false;
  }
  const total = split.node.clientWidth;
  const sizes = split.relativeSizes();
  if (current >= width || sizes.length !== 3 || total < 3 * width) {
    return true;
  }
  const sum = sizes.reduce((a, b) => a + b, 0);
  const grow = ((width - current) / total) * sum;
  if (sizes[1] - grow > 0) {
    split.setRelativeSizes([sizes[0], sizes[1] - grow, sizes[2] + grow]);
  }
  return true;
}

/**
 * The first time `widget` is shown in this page, widen the right area to `width` if it is
 * narrower (later, the width the user dragged it to is theirs). The sidebar expands (and may
 * restore a remembered size) asynchronously, so check a few times during the first seconds.
 */
export function widenWhenShown(
  shell: JupyterFrontEnd.IShell,
  widget: Widget,
  width = PANEL_WIDTH
): void {
  let done = false;
  const widen = (): void => {
    for (const delay of [0, 250, 750, 1500]) {
      setTimeout(() => {
        if (widget.isVisible && widenRightArea(shell, widget.node, width)) {
          done = true;
        }
      }, delay);
    }
  };
  MessageLoop.installMessageHook(widget, (_handler, msg: Message) => {
    if (!done && (msg.type === 'after-show' || msg.type === 'after-attach')) {
      widen();
    }
    return true;
  });
}
