import { describe, expect, it } from 'vitest';

import { Budget, FrameClock, FrameScheduler, MIN_UNITS } from '../scheduler';

/** A clock driven by hand: frames run when the test says, time moves when a task says. */
class ManualClock implements FrameClock {
  t = 0;
  requested: (() => void)[] = [];
  now(): number {
    return this.t;
  }
  requestFrame(callback: () => void): number {
    this.requested.push(callback);
    return this.requested.length;
  }
  cancelFrame(): void {
    this.requested = [];
  }
  /** Run the frame the scheduler asked for; false when it asked for none. */
  frame(): boolean {
    const cbs = this.requested;
    this.requested = [];
    cbs.forEach(cb => cb());
    return cbs.length > 0;
  }
}

/** A task that renders `total` units, as many as the budget allows per frame (like a card). */
function units(total: number, log: string[], name: string, msPerUnit = 0, clock?: ManualClock) {
  let done = 0;
  return {
    get done(): number {
      return done;
    },
    task: (budget: Budget): boolean => {
      let made = 0;
      while (done < total && budget.units - made > 0) {
        done++;
        made++;
        if (clock) {
          clock.t += msPerUnit;
          if (budget.exhausted) {
            break;
          }
        }
      }
      budget.take(made);
      log.push(`${name}:${made}`);
      return done >= total;
    }
  };
}

describe('FrameScheduler', () => {
  it('runs deferred work after every task of the frame, and at once outside a frame', () => {
    const clock = new ManualClock();
    const s = new FrameScheduler(clock, { units: 100, budgetMs: 1000 });
    const log: string[] = [];
    s.mark('a', budget => {
      budget.defer(() => log.push('a:deferred'));
      log.push('a');
      return true;
    });
    s.mark('b', () => {
      log.push('b');
      return true;
    });
    clock.frame();
    expect(log).toEqual(['a', 'b', 'a:deferred']);
    const own = new Budget(Infinity, 10);
    own.defer(() => log.push('now'));
    expect(log[log.length - 1]).toBe('now');
  });

  it('shares one unit budget per frame between every task', () => {
    const clock = new ManualClock();
    const s = new FrameScheduler(clock, { units: 100, budgetMs: 1000 });
    const log: string[] = [];
    const a = units(150, log, 'a');
    const b = units(30, log, 'b');
    s.mark('a', a.task);
    s.mark('b', b.task);
    expect(clock.frame()).toBe(true);
    // a takes the whole budget; b waits (the budget is spent) and goes first next frame.
    expect(log).toEqual(['a:100']);
    expect(clock.frame()).toBe(true);
    expect(log).toEqual(['a:100', 'b:30', 'a:50']);
    expect(a.done + b.done).toBe(180);
    expect(clock.frame()).toBe(false); // nothing left: no frame requested
    expect(s.frames).toBe(2);
  });

  it('stops at the time budget and carries on next frame', () => {
    const clock = new ManualClock();
    const s = new FrameScheduler(clock, { units: 1000, budgetMs: 8 });
    const log: string[] = [];
    const a = units(100, log, 'a', 0.5, clock); // 0.5 ms a unit: 16 fit in 8 ms
    s.mark('a', a.task);
    clock.frame();
    expect(a.done).toBe(16);
    while (clock.frame()) {
      // until done
    }
    expect(a.done).toBe(100);
    expect(log.length).toBe(Math.ceil(100 / 16));
  });

  it('runs in the same frame the tasks that a task marks, each at most once', () => {
    const clock = new ManualClock();
    const s = new FrameScheduler(clock);
    const log: string[] = [];
    s.mark('panel', () => {
      log.push('panel');
      s.mark('card', () => {
        log.push('card');
        return true;
      });
      s.mark('panel', () => {
        log.push('panel again');
        return true;
      });
      return true;
    });
    clock.frame();
    expect(log).toEqual(['panel', 'card']);
    clock.frame();
    expect(log).toEqual(['panel', 'card', 'panel again']);
  });

  it('requests no frame while paused and runs what waited on resume', () => {
    const clock = new ManualClock();
    const s = new FrameScheduler(clock);
    s.paused = true;
    let runs = 0;
    s.mark('panel', () => {
      runs++;
      return true;
    });
    expect(clock.frame()).toBe(false);
    expect(runs).toBe(0);
    expect(s.pending).toBe(1);
    s.paused = false;
    expect(clock.frame()).toBe(true);
    expect(runs).toBe(1);
    expect(s.pending).toBe(0);
  });

  it('a failing task is logged and does not stop the others', () => {
    const clock = new ManualClock();
    const s = new FrameScheduler(clock);
    const seen: string[] = [];
    const error = console.error;
    console.error = () => undefined;
    try {
      s.mark('bad', () => {
        throw new Error('boom');
      });
      s.mark('good', () => {
        seen.push('good');
        return true;
      });
      clock.frame();
    } finally {
      console.error = error;
    }
    expect(seen).toEqual(['good']);
    expect(s.pending).toBe(0);
  });

  it('gives fewer units after slow busy frames and more again after fast ones', () => {
    const clock = new ManualClock();
    const s = new FrameScheduler(clock, { units: 256, budgetMs: 1000 });
    const log: string[] = [];
    const a = units(100000, log, 'a');
    s.mark('a', a.task);
    clock.frame();
    expect(log).toEqual(['a:256']);
    clock.t += 80; // the frame (layout, paint, other work) took 80 ms
    clock.frame();
    expect(log[1]).toBe('a:128');
    for (let k = 0; k < 10; k++) {
      clock.t += 80;
      clock.frame();
    }
    expect(s.units).toBe(MIN_UNITS);
    for (let k = 0; k < 20; k++) {
      clock.t += 16; // fast again
      clock.frame();
    }
    expect(s.units).toBe(256);
    // A slow frame that used few units (a steady stream on a busy machine) keeps the budget.
    s.unmark('a');
    const few = (budget: Budget): boolean => {
      budget.take(10);
      log.push('few');
      return false;
    };
    s.mark('few', few);
    clock.frame();
    for (let k = 0; k < 5; k++) {
      clock.t += 80;
      clock.frame();
    }
    expect(s.units).toBe(256);
    s.unmark('few');
    // An idle gap (no work left between frames) is not a slow frame.
    const b = units(10, log, 'b');
    s.mark('b', b.task);
    clock.t += 5000;
    clock.frame();
    expect(log[log.length - 1]).toBe('b:10');
    expect(s.units).toBe(256);
  });
});
