/**
 * One animation-frame scheduler for the whole panel, with one render budget per frame.
 *
 * Anything that needs rendering marks a keyed task dirty; at the next animation frame the tasks
 * run in the order they were marked, sharing one `Budget`: a time limit (`budgetMs` from the
 * frame's start) and a number of units (token spans, the expensive DOM work). A task that could
 * not finish within the budget returns false and runs again on the next frame, behind the tasks
 * that waited, so one long stream cannot starve the others. Once the budget is spent, the tasks
 * not yet run wait for the next frame (the first task of a frame always runs).
 *
 * The unit budget adapts to what the frames really cost: the time budget only sees the tasks'
 * own JavaScript, not the style, layout and paint of what they appended, nor the page's other
 * work. So when a busy frame that used more than `MIN_UNITS` units is followed by the next one
 * further apart than `SLOW_FRAME_MS`, the next frame gets half the units (down to `MIN_UNITS`);
 * below `FAST_FRAME_MS` the units grow back (up to `units`). A slow frame that used few units was
 * slow for other reasons (a busy machine): shrinking then would only let a steady stream fall
 * behind.
 *
 * While paused (the panel is hidden) no frame is requested; dirty tasks wait and run on resume.
 * The clock is injectable, so the tests drive frames and time by hand.
 */

/** What the scheduler needs from the browser (replaced in tests). */
export interface FrameClock {
  now(): number;
  requestFrame(callback: () => void): number;
  cancelFrame(handle: number): void;
}

export const browserClock: FrameClock = {
  now: () => performance.now(),
  requestFrame: callback => requestAnimationFrame(() => callback()),
  cancelFrame: handle => cancelAnimationFrame(handle)
};

/** Time the panel may spend rendering in one frame (a 60 Hz frame is 16.7 ms). */
export const FRAME_BUDGET_MS = 8;

/**
 * Token spans the whole panel appends per frame. Creating, styling and laying out a span costs
 * about 0.1 ms on a 2-core machine: 2,000 spans in one frame stalled the page for over 100 ms.
 */
export const SPANS_PER_FRAME = 256;

/** Two busy frames further apart than this halve the next frame's units. */
export const SLOW_FRAME_MS = 33;

/** ... and closer than this let them grow back. */
export const FAST_FRAME_MS = 20;

/** The fewest units a frame gets. */
export const MIN_UNITS = 64;

/** The render budget of one frame, shared by every task of that frame. */
export class Budget {
  constructor(
    readonly deadline: number,
    units: number,
    private readonly _now: () => number = () => performance.now()
  ) {
    this._units = units;
  }

  /** Units left (token spans). */
  get units(): number {
    return this._units;
  }

  /** Spend `n` units. */
  take(n: number): void {
    this._units -= n;
  }

  /** True once the units or the time are used up. */
  get exhausted(): boolean {
    return this._units <= 0 || this._now() >= this.deadline;
  }

  /**
   * Run `fn` once the frame's tasks are done (the scheduler's budgets), or now (a budget of its
   * own). For work that reads layout, such as following a stream's end: done after every DOM
   * write of the frame, it costs the one layout the frame needs anyway, where a read between
   * writes forces an extra one.
   */
  defer(fn: () => void): void {
    if (this._deferred === null) {
      fn();
    } else {
      this._deferred.push(fn);
    }
  }

  /** The deferred work, run by the scheduler at the end of the frame (null: run at once). */
  _deferred: (() => void)[] | null = null;

  private _units: number;
}

/** A render task: does what it can within `budget`; returns true when done, false to run again. */
export type Task = (budget: Budget) => boolean;

export interface SchedulerOptions {
  budgetMs?: number;
  units?: number;
}

export class FrameScheduler {
  constructor(clock: FrameClock = browserClock, options: SchedulerOptions = {}) {
    this._clock = clock;
    this._budgetMs = options.budgetMs ?? FRAME_BUDGET_MS;
    this._units = options.units ?? SPANS_PER_FRAME;
    this._frameUnits = this._units;
  }

  /** Tasks waiting for a frame. */
  get pending(): number {
    return this._dirty.size;
  }

  /** Whether `key` waits for a frame. */
  isDirty(key: string): boolean {
    return this._dirty.has(key);
  }

  /** Units the next frame gets (adapted to the cost of the last frames). */
  get units(): number {
    return this._frameUnits;
  }

  /** Frames run so far (tests, benchmarks). */
  get frames(): number {
    return this._frames;
  }

  /** Time budget of a frame, ms (benchmarks and tests may change it). */
  get budgetMs(): number {
    return this._budgetMs;
  }

  set budgetMs(ms: number) {
    this._budgetMs = ms;
  }

  get paused(): boolean {
    return this._paused;
  }

  /** Pause (no frames: the panel is hidden) or resume (a frame for what waits). */
  set paused(on: boolean) {
    this._paused = on;
    if (on) {
      this._cancel();
    } else {
      this._request();
    }
  }

  /** Run `task` at the next frame under `key` (marking again keeps its place, takes the new task). */
  mark(key: string, task: Task): void {
    if (this._disposed) {
      return;
    }
    this._dirty.set(key, task);
    this._request();
  }

  /** Forget the task under `key`. */
  unmark(key: string): void {
    this._dirty.delete(key);
    if (this._dirty.size === 0) {
      this._busySince = null; // idle from here: the next gap says nothing about frame cost
    }
  }

  /**
   * Run one frame now (what the animation frame does). Tasks marked while the frame runs (the
   * panel marks a card once it knows the card needs rendering) run in the same frame if the budget
   * allows; a task runs at most once per frame.
   */
  runFrame(): void {
    this._frame = null;
    if (this._disposed || this._paused) {
      return;
    }
    this._frames++;
    const start = this._clock.now();
    this._adapt(start);
    const budget = new Budget(start + this._budgetMs, this._frameUnits, () => this._clock.now());
    const deferred: (() => void)[] = [];
    budget._deferred = deferred;
    const ran = new Set<string>();
    const again: [string, Task][] = [];
    for (;;) {
      let next: [string, Task] | undefined;
      for (const entry of this._dirty) {
        if (!ran.has(entry[0])) {
          next = entry;
          break;
        }
      }
      if (next === undefined || (ran.size > 0 && budget.exhausted)) {
        break; // what is left keeps its place for the next frame
      }
      const [key, task] = next;
      this._dirty.delete(key);
      ran.add(key);
      let done = true;
      try {
        done = task(budget);
      } catch (e) {
        console.error(`[aigc-lab] render task ${key} failed`, e);
      }
      if (!done) {
        again.push([key, task]);
      }
    }
    budget._deferred = null;
    for (const fn of deferred) {
      try {
        fn();
      } catch (e) {
        console.error('[aigc-lab] deferred render work failed', e);
      }
    }
    for (const [key, task] of again) {
      // Marked again while it ran: the newer task is kept (already waiting).
      if (!this._dirty.has(key)) {
        this._dirty.set(key, task);
      }
    }
    // Still busy: the next frame's distance from this one tells what this one cost.
    this._busySince = this._dirty.size > 0 ? start : null;
    this._lastUsed = this._frameUnits - budget.units;
    if (this._dirty.size > 0) {
      this._request();
    }
  }

  /** Whether the units adapt to the frames' cost (tests that count units per frame turn it off). */
  adaptive = true;

  /** Halve the units after a slow busy frame, grow them back after fast ones. */
  private _adapt(now: number): void {
    if (this._busySince === null || !this.adaptive) {
      return;
    }
    const gap = now - this._busySince;
    if (gap > SLOW_FRAME_MS && this._lastUsed > MIN_UNITS) {
      this._frameUnits = Math.max(
        Math.min(MIN_UNITS, this._units),
        Math.floor(this._frameUnits / 2)
      );
    } else if (gap < FAST_FRAME_MS) {
      this._frameUnits = Math.min(this._units, Math.ceil(this._frameUnits * 1.25));
    }
  }

  dispose(): void {
    this._disposed = true;
    this._cancel();
    this._dirty.clear();
  }

  private _request(): void {
    if (this._frame !== null || this._paused || this._disposed || this._dirty.size === 0) {
      return;
    }
    this._frame = this._clock.requestFrame(() => this.runFrame());
  }

  private _cancel(): void {
    if (this._frame !== null) {
      this._clock.cancelFrame(this._frame);
      this._frame = null;
    }
  }

  private _clock: FrameClock;
  private _budgetMs: number;
  private _units: number;
  private _frameUnits: number;
  /** Start of the last frame if it left work for the next one, else null. */
  private _busySince: number | null = null;
  /** Units the last frame used. */
  private _lastUsed = 0;
  private _dirty = new Map<string, Task>();
  private _frame: number | null = null;
  private _frames = 0;
  private _paused = false;
  private _disposed = false;
}
