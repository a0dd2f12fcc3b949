/**
 * A live line chart (uPlot) themed with JupyterLab's CSS variables.
 *
 * The container carries what the data says, whether or not a canvas could be drawn (jsdom, a
 * hidden panel), so tests can read it:
 *   .aigc-chart[data-series-count][data-point-count][data-runs][data-markers][data-rendered]
 *   [data-builds] (plots built: a new run's series replace the old ones in place, no rebuild)
 *
 * Colours, fonts and grid are read from the computed `--jp-*` variables when the plot is built;
 * `retheme()` rebuilds it (called on a JupyterLab theme change). Data updates use `setData`
 * (one redraw); other series are swapped in place (`delSeries` / `addSeries`); only other axes
 * or scales rebuild the plot.
 *
 * Accessibility: the chart is a `figure` labelled by its title and described by a text summary
 * (`summary`, e.g. "train loss 2.31 at step 400 of 2000, min 1.90 at step 380") in a visually
 * hidden element that screen readers read; the canvas itself is hidden from them. Nothing here
 * animates; `prefersReducedMotion()` is what the panel asks before any smooth scrolling.
 *
 *   .aigc-chart[role=figure][aria-describedby] > .aigc-chart-summary (visually hidden)
 */

import uPlot from 'uplot';

import { ChartData, ChartMarker, ChartSeries, pointCount } from '../series';

/** Theme values read from JupyterLab's CSS variables. */
export interface ChartTheme {
  series: string[];
  axis: string;
  grid: string;
  font: string;
  background: string;
}

function cssVar(style: CSSStyleDeclaration, name: string, fallback: string): string {
  const v = style.getPropertyValue(name).trim();
  return v === '' ? fallback : v;
}

/** Read the chart theme from the computed style of `node` (JupyterLab variables cascade to it). */
export function readTheme(node: Element = document.body): ChartTheme {
  const style = getComputedStyle(node);
  const family = cssVar(style, '--jp-ui-font-family', 'sans-serif');
  // Canvas fonts need px (JupyterLab's small UI size is in em): resolve against 13px.
  const raw = cssVar(style, '--jp-ui-font-size0', '11px');
  const n = parseFloat(raw);
  const size =
    raw.endsWith('px') && n > 0
      ? raw
      : raw.endsWith('em') && n > 0
        ? `${Math.round(n * 13)}px`
        : '11px';
  return {
    series: [
      cssVar(style, '--jp-brand-color1', '#1976d2'),
      cssVar(style, '--jp-warn-color1', '#f57c00'),
      cssVar(style, '--jp-success-color1', '#388e3c'),
      cssVar(style, '--jp-error-color1', '#d32f2f'),
      cssVar(style, '--jp-accent-color1', '#00897b'),
      cssVar(style, '--jp-brand-color3', '#90caf9')
    ],
    axis: cssVar(style, '--jp-ui-font-color2', '#757575'),
    grid: cssVar(style, '--jp-border-color2', '#e0e0e0'),
    font: `${size} ${family}`,
    background: cssVar(style, '--jp-layout-color1', '#ffffff')
  };
}

/** Whether the user asked for reduced motion (`prefers-reduced-motion: reduce`). */
export function prefersReducedMotion(): boolean {
  if (motionQuery === undefined) {
    motionQuery =
      typeof matchMedia === 'function' ? matchMedia('(prefers-reduced-motion: reduce)') : null;
  }
  return motionQuery !== null && motionQuery.matches === true;
}

let motionQuery: MediaQueryList | null | undefined;

/** Visually hidden but read by screen readers (the usual clip pattern, inline: no stylesheet needed). */
function visuallyHidden(node: HTMLElement): void {
  const st = node.style;
  st.position = 'absolute';
  st.width = '1px';
  st.height = '1px';
  st.margin = '-1px';
  st.padding = '0';
  st.overflow = 'hidden';
  st.clip = 'rect(0 0 0 0)';
  st.clipPath = 'inset(50%)';
  st.whiteSpace = 'nowrap';
  st.border = '0';
}

let chartCount = 0;

/** Whether a canvas can be drawn here (not in jsdom). */
function canDraw(): boolean {
  return (
    typeof window !== 'undefined' &&
    typeof ResizeObserver !== 'undefined' &&
    typeof matchMedia !== 'undefined' &&
    !/jsdom/i.test(navigator.userAgent)
  );
}

/** What makes two series the same series of the plot (uPlot options included). */
function seriesKey(s: ChartSeries): string {
  return `${s.run}|${s.label}|${s.colorIndex}|${s.dashed}|${s.scale ?? 'y'}|${s.points}|${s.spanGaps}`;
}

/** uPlot's options for one series. */
function seriesOptions(s: ChartSeries, theme: ChartTheme): uPlot.Series {
  const color = theme.series[s.colorIndex % theme.series.length];
  return {
    label: s.label,
    scale: s.scale ?? 'y',
    stroke: color,
    width: 1.5,
    dash: s.dashed ? [5, 3] : undefined,
    spanGaps: s.spanGaps,
    points: { show: s.points, size: 5, stroke: color, fill: theme.background }
  };
}

export interface ChartOptions {
  className: string;
  title: string;
  xLabel: string;
  yLabel: string;
  height: number;
}

export class LiveChart {
  constructor(options: ChartOptions) {
    this._options = options;
    this.node = document.createElement('div');
    this.node.className = `aigc-chart ${options.className}`;
    const title = document.createElement('div');
    title.className = 'aigc-chart-title';
    title.textContent = options.title;
    this._plotBox = document.createElement('div');
    this._plotBox.className = 'aigc-chart-plot';
    this._plotBox.setAttribute('aria-hidden', 'true');
    this._empty = document.createElement('div');
    this._empty.className = 'aigc-chart-empty';
    this._summary = document.createElement('p');
    this._summary.className = 'aigc-chart-summary';
    this._summary.id = `aigc-chart-summary-${++chartCount}`;
    visuallyHidden(this._summary);
    this.node.setAttribute('role', 'figure');
    this.node.setAttribute('aria-label', options.title);
    this.node.setAttribute('aria-describedby', this._summary.id);
    this.node.append(title, this._empty, this._plotBox, this._summary);
    this._setAttrs();
    if (canDraw()) {
      this._observer = new ResizeObserver(() => this._onResize());
      this._observer.observe(this._plotBox);
    }
  }

  readonly node: HTMLDivElement;

  /** Text shown when there is nothing to plot. */
  set emptyText(text: string) {
    if (this._empty.textContent !== text) {
      this._empty.textContent = text;
    }
  }

  /** The chart's text summary for screen readers. */
  get summary(): string {
    return this._summary.textContent ?? '';
  }

  set summary(text: string) {
    if (this._summary.textContent !== text) {
      this._summary.textContent = text;
    }
  }

  update(data: ChartData): void {
    this._data = data;
    this._setAttrs();
    const empty = data.series.length === 0;
    this._empty.hidden = !empty;
    this._plotBox.hidden = empty;
    if (empty) {
      this._destroy();
      return;
    }
    const key = this._axesKey(data);
    if (this._plot === null || this._theme === null || key !== this._key) {
      this._build();
      return;
    }
    this._swapSeries(this._plot, this._theme, data);
    this._plot.setData(this._aligned(data));
    this.node.setAttribute('data-rendered', 'true');
  }

  /** Rebuild with the current theme (JupyterLab theme changed). */
  retheme(): void {
    this._theme = null;
    this._destroy();
    if (this._data.series.length > 0) {
      this._build();
    }
  }

  dispose(): void {
    this._observer?.disconnect();
    this._observer = null;
    this._destroy();
  }

  private _setAttrs(): void {
    const d = this._data;
    const n = this.node;
    n.setAttribute('data-series-count', String(d.series.length));
    n.setAttribute('data-point-count', String(pointCount(d)));
    n.setAttribute('data-runs', Array.from(new Set(d.series.map(s => s.run))).join(','));
    n.setAttribute('data-markers', String(d.markers.length));
    if (d.series.length === 0) {
      n.setAttribute('data-rendered', 'false');
    }
  }

  /** What only a rebuild can change: the axes and scales. */
  private _axesKey(d: ChartData): string {
    const y2 = d.series.some(s => s.scale === 'y2');
    return `${d.yLabel ?? ''}|${d.y2Label ?? ''}|${d.yRange?.join('-') ?? ''}|${y2}`;
  }

  /**
   * Bring the plot's series to `d`'s in place: the series from the first one that differs on are
   * deleted and the new ones added (`delSeries` / `addSeries`). A new run replaces the charted
   * one without rebuilding the plot (canvas, axes, legend: the costliest frame of a soak's burst
   * was that rebuild).
   */
  private _swapSeries(plot: uPlot, theme: ChartTheme, d: ChartData): void {
    const keys = d.series.map(seriesKey);
    let same = 0;
    while (
      same < keys.length &&
      same < this._seriesKeys.length &&
      keys[same] === this._seriesKeys[same]
    ) {
      same++;
    }
    for (let k = this._seriesKeys.length; k > same; k--) {
      plot.delSeries(k);
    }
    for (let k = same; k < keys.length; k++) {
      plot.addSeries(seriesOptions(d.series[k], theme), k + 1);
    }
    this._seriesKeys = keys;
  }

  private _aligned(d: ChartData): uPlot.AlignedData {
    return [d.x, ...d.series.map(s => s.values)] as unknown as uPlot.AlignedData;
  }

  private _size(): { width: number; height: number } {
    return {
      width: Math.max(0, Math.floor(this._plotBox.clientWidth)),
      height: this._options.height
    };
  }

  private _build(): void {
    this._destroy();
    if (!canDraw()) {
      return;
    }
    const { width, height } = this._size();
    this._key = this._axesKey(this._data);
    this._seriesKeys = this._data.series.map(seriesKey);
    if (width < 40) {
      // Hidden or not laid out yet: built when the resize observer sees a width.
      return;
    }
    // Read once per theme (`retheme`): getComputedStyle forces a style pass over the page.
    const theme = this._theme ?? readTheme(this.node);
    this._theme = theme;
    this.node.setAttribute('data-theme-axis', theme.axis);
    const color = (k: number) => theme.series[k % theme.series.length];
    const markers = (): ChartMarker[] => this._data.markers;
    const axis = (label: string, scale = 'y', side = 3): uPlot.Axis => ({
      label,
      scale,
      side,
      stroke: theme.axis,
      font: theme.font,
      labelFont: theme.font,
      labelSize: 14,
      size: 36,
      grid: { stroke: theme.grid, width: 1 },
      ticks: { stroke: theme.grid, width: 1 }
    });
    const opts: uPlot.Options = {
      width,
      height,
      pxAlign: 0,
      legend: { show: true, live: false },
      cursor: { drag: { x: false, y: false } },
      scales:
        this._data.yRange === undefined
          ? { x: { time: false } }
          : { x: { time: false }, y: { range: this._data.yRange } },
      axes: [
        { ...axis(this._options.xLabel, 'x', 2) },
        axis(this._data.yLabel ?? this._options.yLabel),
        // A second y axis (right) when some series use the 'y2' scale (eval metrics of another range).
        ...(this._data.series.some(s => s.scale === 'y2')
          ? [{ ...axis(this._data.y2Label ?? '', 'y2', 1), grid: { show: false } }]
          : [])
      ],
      series: [
        { label: this._options.xLabel },
        ...this._data.series.map(s => seriesOptions(s, theme))
      ],
      hooks: {
        draw: [
          (u: uPlot) => {
            // TTFT markers: a dashed vertical rule at x = 0 and the value, clamped to the plot.
            const list = markers();
            if (list.length === 0) {
              return;
            }
            const ctx = u.ctx;
            const { left, top, height: h } = u.bbox;
            const ratio = typeof devicePixelRatio === 'number' ? devicePixelRatio : 1;
            ctx.save();
            ctx.font = theme.font.replace(
              /^(\d+(?:\.\d+)?)px/,
              (_m, px: string) => `${Number(px) * ratio}px`
            );
            ctx.textBaseline = 'top';
            ctx.textAlign = 'left';
            list.forEach((m, k) => {
              const x = Math.round(u.valToPos(m.x, 'x', true));
              ctx.strokeStyle = color(m.colorIndex);
              ctx.fillStyle = color(m.colorIndex);
              ctx.setLineDash([3 * ratio, 3 * ratio]);
              ctx.lineWidth = ratio;
              ctx.beginPath();
              ctx.moveTo(x, top);
              ctx.lineTo(x, top + h);
              ctx.stroke();
              ctx.fillText(m.label, Math.max(left, x) + 4 * ratio, top + (2 + 13 * k) * ratio);
            });
            ctx.restore();
          }
        ]
      }
    };
    try {
      this._plot = new uPlot(opts, this._aligned(this._data), this._plotBox);
      this.node.setAttribute('data-rendered', 'true');
      this.node.setAttribute('data-builds', String(++this._builds));
    } catch (e) {
      console.warn('[aigc-lab] chart could not be drawn', e);
      this._plot = null;
      this.node.setAttribute('data-rendered', 'false');
    }
  }

  private _onResize(): void {
    const { width, height } = this._size();
    if (width < 40) {
      return;
    }
    if (this._plot === null) {
      if (this._data.series.length > 0) {
        this._build();
      }
    } else if (Math.abs(this._plot.width - width) > 1) {
      this._plot.setSize({ width, height });
    }
  }

  private _destroy(): void {
    if (this._plot !== null) {
      this._plot.destroy();
      this._plot = null;
    }
    this._key = '';
    this._seriesKeys = [];
  }

  private _options: ChartOptions;
  private _plotBox: HTMLDivElement;
  private _empty: HTMLDivElement;
  private _summary: HTMLParagraphElement;
  private _theme: ChartTheme | null = null;
  private _plot: uPlot | null = null;
  private _key = '';
  private _seriesKeys: string[] = [];
  private _builds = 0;
  private _data: ChartData = { x: [], series: [], markers: [] };
  private _observer: ResizeObserver | null = null;
}
