/**
 * A tiny SVG line chart for streaming series (training loss, eval loss). Redrawn only when the
 * number of points changed; themed by CSS (stroke colours come from JupyterLab variables).
 */

const SVG_NS = 'http://www.w3.org/2000/svg';

export interface Series {
  className: string;
  points: ReadonlyArray<readonly [number, number]>;
}

export class Sparkline {
  constructor(className: string, width = 240, height = 48) {
    this._width = width;
    this._height = height;
    this.node = document.createElementNS(SVG_NS, 'svg');
    this.node.setAttribute('class', className);
    this.node.setAttribute('viewBox', `0 0 ${width} ${height}`);
    this.node.setAttribute('preserveAspectRatio', 'none');
    this.node.setAttribute('role', 'img');
  }

  readonly node: SVGSVGElement;

  /** Redraw when any series grew. */
  update(series: Series[], title: string): void {
    const key = series.map(s => s.points.length).join(',');
    if (key === this._key) {
      return;
    }
    this._key = key;
    const all = series.flatMap(s => s.points);
    if (all.length === 0) {
      this.node.replaceChildren();
      return;
    }
    let x0 = Infinity;
    let x1 = -Infinity;
    let y0 = Infinity;
    let y1 = -Infinity;
    for (const [x, y] of all) {
      x0 = Math.min(x0, x);
      x1 = Math.max(x1, x);
      y0 = Math.min(y0, y);
      y1 = Math.max(y1, y);
    }
    const pad = 2;
    const sx = (x: number) =>
      x1 > x0 ? pad + ((x - x0) / (x1 - x0)) * (this._width - 2 * pad) : this._width / 2;
    const sy = (y: number) =>
      y1 > y0 ? pad + (1 - (y - y0) / (y1 - y0)) * (this._height - 2 * pad) : this._height / 2;
    const children: SVGElement[] = [];
    const t = document.createElementNS(SVG_NS, 'title');
    t.textContent = title;
    children.push(t);
    for (const s of series) {
      if (s.points.length === 0) {
        continue;
      }
      const line = document.createElementNS(SVG_NS, 'polyline');
      line.setAttribute('class', s.className);
      line.setAttribute('fill', 'none');
      line.setAttribute('vector-effect', 'non-scaling-stroke');
      line.setAttribute(
        'points',
        s.points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(' ')
      );
      children.push(line);
    }
    this.node.replaceChildren(...children);
  }

  private _key = '';
  private _width: number;
  private _height: number;
}
