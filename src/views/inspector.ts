/**
 * The token inspector's popover: for a token generated with `logprobs=k`, its index, id, latency
 * and probability, and the k most likely tokens at that position (piece with whitespace made
 * visible, id, probability), the chosen one marked.
 *
 * One popover per run card, created on first use and reused. It lives in `document.body` with
 * `position: fixed`, because the card (`contain: content`) and the scrolling text box would clip
 * it. While open it is the anchor span's `aria-describedby`, follows the anchor when something
 * scrolls and closes on Escape anywhere (WCAG 1.4.13: dismissable without moving the pointer).
 *
 * DOM contract (used by the tests):
 *   div.aigc-tokpop[role=tooltip][id][data-i]
 *     .aigc-tokpop-head     '#i · id N · "piece" · ms'
 *     .aigc-tokpop-chosen   the chosen token: piece, id, probability
 *     table.aigc-tokpop-top tr.aigc-tokpop-alt[data-id][data-chosen] (piece, id, p, mark)
 *     .aigc-tokpop-none     instead of the table when no alternatives were recorded (k = 0)
 */

import { TranslationBundle } from '@jupyterlab/translation';

import { TokenItem, TopToken } from '../protocol';
import { NULL_TRANS, formatProb, visiblePiece } from './format';

/** Gap between the anchor token and the popover, px. */
const GAP = 4;

let popoverCount = 0;

function div(className: string, parent: HTMLElement, text?: string): HTMLDivElement {
  const node = document.createElement('div');
  node.className = className;
  if (text !== undefined) {
    node.textContent = text;
  }
  parent.appendChild(node);
  return node;
}

function piece(text: string): HTMLElement {
  const code = document.createElement('code');
  code.className = 'aigc-tokpop-piece';
  code.textContent = visiblePiece(text);
  return code;
}

function row(cells: (string | HTMLElement)[], tag: 'td' | 'th'): HTMLTableRowElement {
  const tr = document.createElement('tr');
  for (const c of cells) {
    const cell = document.createElement(tag);
    cell.append(c);
    tr.appendChild(cell);
  }
  return tr;
}

/** The table of alternatives, the chosen token's row marked (class, data-chosen and a ✓). */
function altTable(
  top: readonly TopToken[],
  chosen: number | null,
  trans: TranslationBundle
): HTMLTableElement {
  const table = document.createElement('table');
  table.className = 'aigc-tokpop-top';
  table.setAttribute('aria-label', trans.__('The most likely tokens at this position'));
  const head = document.createElement('thead');
  head.appendChild(row([trans.__('piece'), trans.__('id'), trans.__('p'), ''], 'th'));
  const body = document.createElement('tbody');
  for (const alt of top) {
    const isChosen = alt.id === chosen;
    const mark = isChosen ? '✓' : '';
    const tr = row([piece(alt.text), String(alt.id), formatProb(alt.logprob), mark], 'td');
    tr.className = isChosen ? 'aigc-tokpop-alt aigc-tokpop-is-chosen' : 'aigc-tokpop-alt';
    tr.setAttribute('data-id', String(alt.id));
    tr.setAttribute('data-chosen', isChosen ? 'true' : 'false');
    if (isChosen) {
      tr.title = trans.__('the token that was generated');
    }
    body.appendChild(tr);
  }
  table.append(head, body);
  return table;
}

/** Fill `node` with what the popover says about `item` (`head`: its index / id / latency line). */
export function fillPopover(
  node: HTMLElement,
  item: TokenItem,
  head: string,
  trans: TranslationBundle = NULL_TRANS
): void {
  node.replaceChildren();
  node.setAttribute('data-i', String(item.i));
  div('aigc-tokpop-head', node, head);
  if (item.logprob === undefined || item.top === undefined) {
    return;
  }
  const chosen = div('aigc-tokpop-chosen', node, trans.__('chosen') + ' ');
  chosen.append(
    piece(item.text),
    ' ' + trans.__('id %1 · p %2', item.id ?? '–', formatProb(item.logprob))
  );
  if (item.top.length === 0) {
    div('aigc-tokpop-none', node, trans.__('no alternatives recorded (logprobs=0)'));
    return;
  }
  node.appendChild(altTable(item.top, item.id, trans));
  if (!item.top.some(alt => alt.id === item.id)) {
    div(
      'aigc-tokpop-none',
      node,
      trans.__('the chosen token is not among the top %1', item.top.length)
    );
  }
}

export class TokenPopover {
  constructor(trans: TranslationBundle = NULL_TRANS) {
    this._trans = trans;
    this.node = document.createElement('div');
    this.node.className = 'aigc-tokpop';
    this.node.id = `aigc-tokpop-${++popoverCount}`;
    this.node.setAttribute('role', 'tooltip');
  }

  readonly node: HTMLDivElement;

  /** The token span the popover describes, or null when closed. */
  get anchor(): HTMLElement | null {
    return this._anchor;
  }

  /** Describe `item` next to `anchor` (the token's span). */
  show(anchor: HTMLElement, item: TokenItem, head: string): void {
    if (this._anchor !== anchor) {
      this._detach();
      this._anchor = anchor;
      anchor.setAttribute('aria-describedby', this.node.id);
    }
    fillPopover(this.node, item, head, this._trans);
    if (!this.node.isConnected) {
      document.body.appendChild(this.node);
      // Capture: Lumino's keybindings (also on document, capture) stop a matched key's propagation.
      document.addEventListener('keydown', this._onKey, true);
      window.addEventListener('scroll', this._onScroll, true);
    }
    this._place();
  }

  /** Close the popover (no-op when closed). */
  hide(): void {
    this._detach();
    if (this.node.isConnected) {
      this.node.remove();
      document.removeEventListener('keydown', this._onKey, true);
      window.removeEventListener('scroll', this._onScroll, true);
    }
  }

  private _detach(): void {
    if (this._anchor !== null) {
      this._anchor.removeAttribute('aria-describedby');
      this._anchor = null;
    }
  }

  /** Below the anchor, or above it when there is no room below; kept inside the window. */
  private _place(): void {
    const anchor = this._anchor;
    if (anchor === null) {
      return;
    }
    const a = anchor.getBoundingClientRect();
    const style = this.node.style;
    style.left = '0px';
    style.top = '0px';
    const p = this.node.getBoundingClientRect();
    const below = a.bottom + GAP;
    const above = a.top - GAP - p.height;
    const top = below + p.height > window.innerHeight && above >= 0 ? above : below;
    const left = Math.max(GAP, Math.min(a.left, window.innerWidth - p.width - GAP));
    style.left = `${Math.round(left)}px`;
    style.top = `${Math.round(top)}px`;
  }

  private _onKey = (ev: KeyboardEvent): void => {
    if (ev.key === 'Escape') {
      this.hide();
    }
  };

  private _onScroll = (): void => {
    if (this._anchor !== null && !this._anchor.isConnected) {
      this.hide();
    } else {
      this._place();
    }
  };

  private _anchor: HTMLElement | null = null;
  private _trans: TranslationBundle;
}
