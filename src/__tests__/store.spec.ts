import { describe, expect, it } from 'vitest';

import { KernelToPanelMessage, TokenItem, TokensMessage } from '../protocol';
import {
  Action,
  State,
  Store,
  initialState,
  linkSummary,
  reduce,
  reduceAll,
  runList,
  runText,
  tokenCount,
  DEFAULT_MAX_TOKENS
} from '../store';
import { logAt, logToArray } from '../chunklog';
import { fixtureAction } from './fixtures';

const fx = fixtureAction;

function msg(message: KernelToPanelMessage): Action {
  return { type: 'message', message };
}

function tokens(run: string, from: number, count: number, text = (i: number) => `t${i} `): Action {
  const items: TokenItem[] = [];
  for (let i = from; i < from + count; i++) {
    items.push({ i, id: i, text: text(i), ms: i * 2.5 });
  }
  const m: TokensMessage = { v: 1, type: 'tokens', run, items };
  return msg(m);
}

function deepFreeze<T>(x: T): T {
  if (typeof x === 'object' && x !== null && !Object.isFrozen(x)) {
    Object.freeze(x);
    for (const v of Object.values(x)) {
      deepFreeze(v);
    }
  }
  return x;
}

describe('run lifecycle over the fixtures', () => {
  it('hello connects', () => {
    const s = reduce(initialState(), fx('hello.json'));
    expect(s.connection.connected).toBe(true);
    expect(s.connection.kernel).toMatchObject({ language: 'python', pid: 4242 });
    expect(s.connection.kernelProtocol).toBe(1);
  });

  it('generate: start, tokens, end ok', () => {
    const s = reduceAll(initialState(), [
      fx('hello.json'),
      fx('run_start_generate.json'),
      fx('tokens.json'),
      fx('run_end_ok.json')
    ]);
    expect(s.order).toEqual(['gen-7f3a']);
    const run = s.runs['gen-7f3a'];
    expect(run.kind).toBe('generate');
    expect(run.placeholder).toBe(false);
    expect(run.model?.name).toBe('starter:gpt-tiny');
    expect(run.config).toEqual({ max_new_tokens: 64, temperature: 0.8, top_k: 50 });
    expect(run.t0).toBe(1795460400123.5);
    expect(run.status).toBe('ok');
    expect(logToArray(run.tokens).map(t => t.i)).toEqual([0, 1, 2]);
    expect(runText(run)).toBe('Once upon a ✓');
    expect(run.metrics?.tok_s).toBe(180.2);
    expect(run.error).toBeNull();
    expect([run.dups, run.gaps]).toEqual([0, 0]);
  });

  it('end cancelled and end error', () => {
    const base = reduceAll(initialState(), [fx('run_start_generate.json'), fx('tokens.json')]);
    expect(reduce(base, fx('run_end_cancelled.json')).runs['gen-7f3a'].status).toBe('cancelled');
    const err = reduce(base, fx('run_end_error.json')).runs['gen-7f3a'];
    expect(err.status).toBe('error');
    expect(err.error).toMatch(/^ModelLoadError/);
  });

  it('train: steps, evals, checkpoints in order', () => {
    const s = reduceAll(initialState(), [
      fx('run_start_generate.json'),
      fx('run_start_train.json'),
      fx('train_step.json'),
      fx('train_eval.json'),
      fx('checkpoint.json')
    ]);
    expect(s.order).toEqual(['train-01', 'gen-7f3a']); // by start time, not arrival
    const run = s.runs['train-01'];
    expect(run.kind).toBe('train');
    expect(run.model?.quant).toBe('int8');
    expect(logToArray(run.steps)).toEqual([{ step: 10, loss: 3.25, lr: 0.0002, tok_s: 5120 }]);
    expect(run.evals).toEqual([
      { step: 50, val_loss: 2.9, ppl: 18.17, metrics: { accuracy: 0.42 } }
    ]);
    expect(run.checkpoints).toEqual([{ step: 50, path: 'runs/train-01/checkpoint-50' }]);
    expect(run.status).toBe('running');
    expect(runList(s).map(r => r.id)).toEqual(['train-01', 'gen-7f3a']); // by start time
  });

  it('train.steps: a batch appends its new steps in one go, after train.step, skipping replayed ones', () => {
    let s = reduceAll(initialState(), [
      fx('run_start_train.json'),
      fx('train_step.json'),
      fx('train_steps.json')
    ]);
    const run = s.runs['train-01'];
    expect(logToArray(run.steps)).toEqual([
      { step: 10, loss: 3.25, lr: 0.0002, tok_s: 5120 },
      { step: 11, loss: 3.2, lr: 0.0002, tok_s: 5120 },
      { step: 12, loss: 3.1875, lr: 0.0002, tok_s: null }
    ]);
    // The same batch again (a replay) changes nothing, not even the run's identity.
    expect(reduce(s, fx('train_steps.json'))).toBe(s);
    // A batch that overlaps what is kept appends only the steps after the last one.
    const items = [11, 12, 13, 14].map(step => ({
      step,
      loss: 1,
      lr: 0.1,
      tok_s: null,
      epoch: null,
      eta_s: null
    }));
    s = reduce(s, msg({ v: 1, type: 'train.steps', run: 'train-01', items }));
    expect(logToArray(s.runs['train-01'].steps).map(x => x.step)).toEqual([10, 11, 12, 13, 14]);
  });

  it('a repeated run.start changes nothing', () => {
    const s = reduceAll(initialState(), [fx('run_start_generate.json'), fx('tokens.json')]);
    expect(reduce(s, fx('run_start_generate.json'))).toBe(s);
  });
});

describe('batches', () => {
  it('a batch is its messages one by one, in order, in one store update', () => {
    const parts = [
      fx('run_start_generate.json'),
      fx('tokens.json'),
      fx('run_start_train.json'),
      fx('train_steps.json'),
      fx('train_eval.json'),
      fx('run_end_ok.json')
    ];
    const messages = parts.map(a => (a.type === 'message' ? a.message : null));
    const inner = messages.filter(
      (m): m is Exclude<KernelToPanelMessage, { type: 'hello' | 'ack' | 'batch' }> =>
        m !== null && m.type !== 'hello' && m.type !== 'ack' && m.type !== 'batch'
    );
    expect(inner.length).toBe(parts.length);
    const oneByOne = reduceAll(initialState(), parts);
    const store = new Store();
    let updates = 0;
    store.subscribe(() => updates++);
    store.dispatch(msg({ v: 1, type: 'batch', run: null, messages: inner }));
    expect(updates).toBe(1);
    expect(store.state).toEqual(oneByOne);
    expect(store.state.order.length).toBe(2);
  });
});

describe('token stream', () => {
  it('2000 tokens in batches arrive complete, in order, without dups or gaps', () => {
    let s = reduce(initialState(), fx('run_start_generate.json'));
    const sizes = [1, 7, 64, 3, 512, 13, 100];
    let i = 0;
    let k = 0;
    while (i < 2000) {
      const n = Math.min(sizes[k++ % sizes.length], 2000 - i);
      s = reduce(s, tokens('gen-7f3a', i, n));
      i += n;
    }
    const run = s.runs['gen-7f3a'];
    expect(run.tokens.length).toBe(2000);
    expect(logToArray(run.tokens).every((t, n) => t.i === n)).toBe(true);
    expect(run.dups).toBe(0);
    expect(run.gaps).toBe(0);
    expect(run.nextIndex).toBe(2000);
    let expected = '';
    for (let n = 0; n < 2000; n++) {
      expected += `t${n} `;
    }
    expect(runText(run)).toBe(expected);
    expect(runText(run)).toBe(
      logToArray(run.tokens)
        .map(t => t.text)
        .join('')
    );
  });

  it('preserves whitespace and unicode exactly', () => {
    const pieces = ['  lead', '\n', '\t tab', ' ', '✓🙂', '\r\n', ''];
    const s = reduce(
      initialState(),
      tokens('r', 0, pieces.length, i => pieces[i])
    );
    expect(runText(s.runs['r'])).toBe(pieces.join(''));
  });

  it('a duplicated batch is counted as dups and not appended', () => {
    const once = reduceAll(initialState(), [
      fx('run_start_generate.json'),
      tokens('gen-7f3a', 0, 10)
    ]);
    const twice = reduce(once, tokens('gen-7f3a', 0, 10));
    const run = twice.runs['gen-7f3a'];
    expect(run.dups).toBe(10);
    expect(run.gaps).toBe(0);
    expect(run.tokens.length).toBe(10);
    expect(runText(run)).toBe(runText(once.runs['gen-7f3a']));
    // A batch overlapping the end: old part dropped, new part appended.
    const overlap = reduce(twice, tokens('gen-7f3a', 8, 5)).runs['gen-7f3a'];
    expect(overlap.dups).toBe(12);
    expect(logToArray(overlap.tokens).map(t => t.i)).toEqual([
      0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12
    ]);
  });

  it('a gap is counted and the later tokens are still appended', () => {
    const s = reduceAll(initialState(), [
      fx('run_start_generate.json'),
      tokens('gen-7f3a', 0, 5),
      tokens('gen-7f3a', 8, 2) // 5, 6, 7 were dropped
    ]);
    const run = s.runs['gen-7f3a'];
    expect(run.gaps).toBe(1);
    expect(run.dups).toBe(0);
    expect(logToArray(run.tokens).map(t => t.i)).toEqual([0, 1, 2, 3, 4, 8, 9]);
    expect(run.nextIndex).toBe(10);
    expect(runText(run)).toBe('t0 t1 t2 t3 t4 t8 t9 ');
    // A late arrival of a dropped index is then below the expected index: a dup.
    expect(reduce(s, tokens('gen-7f3a', 6, 1)).runs['gen-7f3a'].dups).toBe(1);
  });

  it('tokens for an unknown run create a placeholder run', () => {
    const s = reduce(initialState(), fx('tokens.json'));
    expect(s.order).toEqual(['gen-7f3a']);
    const run = s.runs['gen-7f3a'];
    expect(run.placeholder).toBe(true);
    expect(run.kind).toBe('unknown');
    expect(run.model).toBeNull();
    expect(run.status).toBe('running');
    expect(runText(run)).toBe('Once upon a ✓');
    // run.start arriving late fills the placeholder in, keeping its tokens and position.
    const filled = reduce(s, fx('run_start_generate.json')).runs['gen-7f3a'];
    expect(filled.placeholder).toBe(false);
    expect(filled.kind).toBe('generate');
    expect(filled.tokens.length).toBe(3);
  });

  it("keeps each token's logprob and top alternatives, and marks the run as having logprobs", () => {
    let s = reduce(initialState(), fx('tokens.json'));
    expect(s.runs['gen-7f3a'].logprobs).toBe(false);
    expect(Object.keys(logAt(s.runs['gen-7f3a'].tokens, 0)).sort()).toEqual([
      'i',
      'id',
      'ms',
      'text'
    ]);
    s = reduce(initialState(), fx('tokens_logprobs.json'));
    const run = s.runs['gen-7f3a'];
    expect(run.logprobs).toBe(true);
    expect(runText(run)).toBe('Once upon a✓');
    expect(logAt(run.tokens, 1)).toEqual({
      i: 1,
      id: 2402,
      text: ' upon',
      ms: 17.25,
      logprob: -3.5,
      top: [
        { id: 257, text: ' a', logprob: -0.2 },
        { id: 2402, text: ' upon', logprob: -3.5 }
      ]
    });
    expect(logAt(run.tokens, 2)).toMatchObject({ logprob: -0.01, top: [] });
    expect(Object.keys(logAt(run.tokens, 3)).sort()).toEqual(['i', 'id', 'ms', 'text']); // the tail
    // A later batch without logprobs (the tail alone) does not unset the flag.
    const later = reduce(s, tokens('gen-7f3a', 4, 1));
    expect(later.runs['gen-7f3a'].logprobs).toBe(true);
  });

  it('an empty batch changes nothing', () => {
    const s = reduce(initialState(), fx('run_start_generate.json'));
    expect(reduce(s, msg({ v: 1, type: 'tokens', run: 'gen-7f3a', items: [] }))).toBe(s);
  });
});

describe('connection and restarts', () => {
  it('kernel restart marks running runs interrupted and disconnects', () => {
    const s = reduceAll(initialState(), [
      fx('hello.json'),
      fx('run_start_generate.json'),
      fx('tokens.json'),
      fx('run_start_train.json'),
      fx('run_end_ok.json'), // gen-7f3a ends ok, train-01 still running
      { type: 'cancel.requested', run: 'train-01', id: 'req-9' },
      { type: 'kernel.restarted' }
    ]);
    expect(s.runs['gen-7f3a'].status).toBe('ok');
    expect(s.runs['train-01'].status).toBe('interrupted');
    expect(s.runs['train-01'].cancel).toMatchObject({ id: 'req-9', state: 'failed' });
    expect(s.connection.connected).toBe(false);
    expect(s.connection.kernel).toBeNull();
    expect(s.connection.restarts).toBe(1);
    // History survives the restart; a new hello reconnects.
    expect(s.order).toEqual(['train-01', 'gen-7f3a']); // by start time
    expect(reduce(s, fx('hello.json')).connection.connected).toBe(true);
  });

  it('protocol mismatch is recorded and cleared by a matching hello', () => {
    const reason = 'The kernel speaks aigc-lab protocol v2';
    const s = reduce(initialState(), { type: 'protocol.mismatch', version: 2, reason });
    expect(s.connection.protocolMismatch).toBe(reason);
    expect(s.connection.connected).toBe(false);
    expect(reduce(s, fx('hello.json')).connection.protocolMismatch).toBeNull();
  });

  it('malformed messages are only counted', () => {
    const s0 = reduce(initialState(), fx('run_start_generate.json'));
    const s1 = reduce(s0, { type: 'malformed', reason: 'x' });
    expect(s1.connection.ignored).toBe(1);
    expect(s1.runs).toBe(s0.runs);
  });

  it('a closed comm disconnects and fails pending cancels but keeps runs running', () => {
    const s = reduceAll(initialState(), [
      fx('hello.json'),
      fx('run_start_generate.json'),
      { type: 'cancel.requested', run: 'gen-7f3a', id: 'req-1' },
      { type: 'comm.closed' }
    ]);
    expect(s.connection.connected).toBe(false);
    expect(s.runs['gen-7f3a'].status).toBe('running');
    expect(s.runs['gen-7f3a'].cancel?.state).toBe('failed');
  });

  it('re-attaching to an existing comm counts as connected', () => {
    expect(reduce(initialState(), { type: 'comm.reattached' }).connection.connected).toBe(true);
  });
});

describe('cancel requests', () => {
  const started = reduceAll(initialState(), [fx('run_start_generate.json'), fx('tokens.json')]);

  it('pending, then acknowledged by the matching ack', () => {
    const pending = reduce(started, { type: 'cancel.requested', run: 'gen-7f3a', id: 'req-3' });
    expect(pending.runs['gen-7f3a'].cancel).toEqual({ id: 'req-3', state: 'pending', error: null });
    const acked = reduce(pending, fx('ack.json'));
    expect(acked.runs['gen-7f3a'].cancel).toEqual({
      id: 'req-3',
      state: 'acknowledged',
      error: null
    });
    const ended = reduce(acked, fx('run_end_cancelled.json'));
    expect(ended.runs['gen-7f3a'].status).toBe('cancelled');
  });

  it('a refusing ack is recorded; an ack with another id is ignored', () => {
    const pending = reduce(started, { type: 'cancel.requested', run: 'gen-7f3a', id: 'req-3' });
    const refused = reduce(
      pending,
      msg({ v: 1, type: 'ack', run: null, id: 'req-3', ok: false, error: 'not running' })
    );
    expect(refused.runs['gen-7f3a'].cancel).toEqual({
      id: 'req-3',
      state: 'refused',
      error: 'not running'
    });
    const other = msg({
      v: 1,
      type: 'ack',
      run: 'gen-7f3a',
      id: 'req-other',
      ok: true,
      error: null
    });
    expect(reduce(pending, other)).toBe(pending);
  });

  it('a failed send is recorded', () => {
    const s = reduceAll(started, [
      { type: 'cancel.requested', run: 'gen-7f3a', id: 'r1' },
      { type: 'cancel.failed', run: 'gen-7f3a', id: 'r1', error: 'no comm' }
    ]);
    expect(s.runs['gen-7f3a'].cancel).toEqual({ id: 'r1', state: 'failed', error: 'no comm' });
  });
});

describe('purity and efficiency', () => {
  it('never mutates its input state', () => {
    let s: State = deepFreeze(initialState());
    const actions: Action[] = [
      fx('hello.json'),
      fx('run_start_generate.json'),
      fx('tokens.json'),
      tokens('gen-7f3a', 3, 100),
      tokens('gen-7f3a', 0, 2),
      { type: 'cancel.requested', run: 'gen-7f3a', id: 'req-3' },
      fx('ack.json'),
      fx('run_start_train.json'),
      fx('train_step.json'),
      fx('train_eval.json'),
      fx('checkpoint.json'),
      { type: 'protocol.mismatch', version: 2, reason: 'x' },
      { type: 'malformed', reason: 'x' },
      { type: 'comm.closed' },
      { type: 'comm.reattached' },
      { type: 'kernel.restarted' }
    ];
    for (const a of actions) {
      s = deepFreeze(reduce(s, a)); // would throw on a write to a frozen object
    }
    expect(s.runs['gen-7f3a'].tokens.length).toBe(103);
  });

  it('keeps unchanged runs by identity', () => {
    const s = reduceAll(initialState(), [
      fx('run_start_train.json'),
      fx('run_start_generate.json')
    ]);
    const t = reduce(s, fx('tokens.json'));
    expect(t.runs['train-01']).toBe(s.runs['train-01']);
    expect(t.runs['gen-7f3a']).not.toBe(s.runs['gen-7f3a']);
  });

  it('streams 20000 single-token batches quickly', () => {
    let s = reduce(initialState(), fx('run_start_generate.json'));
    const t0 = performance.now();
    for (let i = 0; i < 20000; i++) {
      s = reduce(s, tokens('gen-7f3a', i, 1));
    }
    const elapsed = performance.now() - t0;
    expect(tokenCount(s.runs['gen-7f3a'])).toBe(20000);
    expect(s.runs['gen-7f3a'].tokens.length).toBeLessThanOrEqual(DEFAULT_MAX_TOKENS);
    // Generous bound: catches accidental quadratic blow-ups, not machine speed.
    expect(elapsed).toBeLessThan(5000);
  });
});

describe('Store', () => {
  it('notifies subscribers of changes only', () => {
    const store = new Store();
    const seen: number[] = [];
    const off = store.subscribe(s => seen.push(s.order.length));
    store.dispatch(fx('run_start_generate.json'));
    store.dispatch(fx('run_start_generate.json')); // no change, no notification
    store.dispatch(fx('run_start_train.json'));
    off();
    store.dispatch(fx('tokens.json'));
    expect(seen).toEqual([1, 2]);
    expect(store.state.runs['gen-7f3a'].tokens.length).toBe(3);
  });
});

describe('data-preparation steps', () => {
  it('keeps data.step messages in order, bounded, without creating runs', () => {
    let s = reduce(initialState(), fx('data_step.json'));
    expect(s.dataSteps).toHaveLength(1);
    expect(s.dataSteps[0]).toMatchObject({ step: 'dedupe', rows_in: 1200, rows_out: 1150 });
    expect(s.order).toHaveLength(0);
    for (let k = 0; k < 500; k++) {
      s = reduce(
        s,
        msg({
          v: 1,
          type: 'data.step',
          run: 'd',
          step: `s${k}`,
          rows_in: k,
          rows_out: k,
          changed: 0,
          detail: {}
        })
      );
    }
    expect(s.dataSteps.length).toBeLessThanOrEqual(200);
    expect(s.dataSteps[s.dataSteps.length - 1].step).toBe('s499');
  });
});

describe('history replay, caps and clearing (issue 6)', () => {
  const fx6 = fixtureAction;
  const start = (run: string): Action => ({
    type: 'message',
    message: {
      v: 1,
      type: 'run.start',
      run,
      kind: 'generate',
      model: { name: 'm', params: 1, dtype: 'float32', quant: null, device: 'cpu' },
      config: {},
      t0: 1
    }
  });
  const endOk = (run: string): Action => ({
    type: 'message',
    message: {
      v: 1,
      type: 'run.end',
      run,
      status: 'ok',
      metrics: {
        ttft_ms: null,
        tokens: 0,
        tok_s: null,
        itl_p50_ms: null,
        itl_p95_ms: null,
        peak_mem_mb: null
      },
      error: null
    }
  });

  it('tracks a history request and its ack without touching cancels', () => {
    let s = reduce(initialState(), { type: 'history.requested', id: 'h-1' });
    expect(s.connection.history).toEqual({ id: 'h-1', state: 'pending', error: null });
    s = reduce(s, {
      type: 'message',
      message: { v: 1, type: 'ack', run: null, id: 'h-1', ok: true, error: null }
    });
    expect(s.connection.history?.state).toBe('acknowledged');
    const f = reduce(reduce(initialState(), { type: 'history.requested', id: 'h-2' }), {
      type: 'history.failed',
      id: 'h-2',
      error: 'no comm'
    });
    expect(f.connection.history).toEqual({ id: 'h-2', state: 'failed', error: 'no comm' });
  });

  it('ignores a replay of a run already shown (tokens, steps, evals, checkpoints, start, end)', () => {
    const live = [
      fx6('run_start_train.json'),
      fx6('train_step.json'),
      fx6('train_eval.json'),
      fx6('checkpoint.json'),
      fx6('run_start_generate.json'),
      fx6('tokens.json'),
      fx6('run_end_ok.json')
    ];
    const once = reduceAll(initialState(), live);
    const twice = reduceAll(once, live);
    expect(twice.order).toEqual(once.order);
    expect(twice.runs['train-01'].steps).toEqual(once.runs['train-01'].steps);
    expect(twice.runs['train-01'].evals).toEqual(once.runs['train-01'].evals);
    expect(twice.runs['train-01'].checkpoints).toEqual(once.runs['train-01'].checkpoints);
    expect(runText(twice.runs['gen-7f3a'])).toBe(runText(once.runs['gen-7f3a']));
    expect(twice.runs['gen-7f3a'].dups).toBe(3); // counted, not appended
  });

  it('caps the number of runs, dropping the oldest ended ones first', () => {
    let s = reduce(initialState(), { type: 'limits', maxRuns: 3 });
    s = reduceAll(s, [start('a'), start('b'), endOk('b'), start('c'), endOk('c'), start('d')]);
    // 'a' is still running: 'b' (oldest ended) goes.
    expect(s.order).toEqual(['a', 'c', 'd']);
    s = reduceAll(s, [endOk('a'), start('e')]);
    expect(s.order).toEqual(['c', 'd', 'e']);
    s = reduce(s, { type: 'limits', maxRuns: 1 });
    expect(s.order).toEqual(['d', 'e']); // d and e still run: kept
    expect(reduce(s, { type: 'limits', maxRuns: 1 })).toBe(s);
  });

  it('clears ended runs and keeps running ones', () => {
    const s = reduceAll(initialState(), [start('a'), endOk('a'), start('b')]);
    const c = reduce(s, { type: 'runs.cleared' });
    expect(c.order).toEqual(['b']);
    expect(Object.keys(c.runs)).toEqual(['b']);
    expect(reduce(c, { type: 'runs.cleared' })).toBe(c);
  });
});

describe('connection state', () => {
  it('says which of websocket lost, restarting, dead, comm closed, waiting or connected holds', () => {
    const summary = (actions: Action[]) =>
      linkSummary(reduceAll(initialState(), actions).connection);
    expect(summary([]).state).toBe('waiting');
    const hello = fixtureAction('hello.json');
    expect(summary([hello]).state).toBe('connected');
    expect(summary([hello, { type: 'comm.closed' }])).toMatchObject({
      state: 'comm-closed',
      text: expect.stringMatching(/import aigc_lab again/)
    });
    expect(summary([hello, { type: 'link', link: 'websocket-lost' }]).state).toBe('websocket-lost');
    expect(summary([hello, { type: 'link', link: 'disconnected' }])).toMatchObject({
      state: 'disconnected',
      text: expect.stringMatching(/Reconnect to Kernel/)
    });
    expect(
      summary([hello, { type: 'link', link: 'restarting' }, { type: 'kernel.restarted' }]).state
    ).toBe('restarting');
    expect(summary([hello, { type: 'link', link: 'dead' }]).text).toMatch(/dead/);
    // Back: the websocket reconnected, the kernel restarted and said hello again.
    expect(
      summary([
        hello,
        { type: 'link', link: 'restarting' },
        { type: 'kernel.restarted' },
        { type: 'link', link: 'ok' }
      ]).state
    ).toBe('waiting');
    const s = reduce(initialState(), { type: 'link', link: 'ok' });
    expect(s).toBe(reduce(s, { type: 'link', link: 'ok' }));
  });
});

function startAt(run: string, t0: number): Action {
  return msg({
    v: 1,
    type: 'run.start',
    run,
    kind: 'generate',
    model: { name: 'm', params: 1, dtype: 'float32', quant: null, device: 'cpu' },
    config: {},
    t0
  });
}

function endOk(run: string): Action {
  return msg({
    v: 1,
    type: 'run.end',
    run,
    status: 'ok',
    metrics: {
      ttft_ms: null,
      tokens: 0,
      tok_s: null,
      itl_p50_ms: null,
      itl_p95_ms: null,
      peak_mem_mb: null
    },
    error: null
  });
}

describe('bounded token storage', () => {
  it('keeps at most maxTokens per run, the newest, and counts the rest', () => {
    const cap = 1000;
    let s = reduce(initialState(), { type: 'limits', maxRuns: 10, maxTokens: cap });
    s = reduce(s, startAt('r', 1));
    for (let i = 0; i < 5000; i += 40) {
      s = reduce(s, tokens('r', i, 40));
    }
    const run = s.runs['r'];
    expect(tokenCount(run)).toBe(5000);
    expect(run.tokens.length).toBeLessThanOrEqual(cap);
    expect(run.tokens.dropped).toBe(5000 - run.tokens.length);
    expect(logAt(run.tokens, 0).i).toBe(run.tokens.dropped);
    expect(runText(run).startsWith(`t${run.tokens.dropped} `)).toBe(true);
    expect(runText(run).endsWith('t4999 ')).toBe(true);
    // TTFT and the rate still see the first token.
    expect(run.firstToken?.i).toBe(0);
    // A replay of every token adds nothing (duplicates by index).
    const replayed = reduceAll(s, [tokens('r', 0, 5000)]);
    expect(tokenCount(replayed.runs['r'])).toBe(5000);
    expect(replayed.runs['r'].dups).toBe(5000);
  });

  it('a lower tokensPerRun caps the runs already kept', () => {
    let s = reduceAll(initialState(), [startAt('r', 1), tokens('r', 0, 3000)]);
    expect(s.runs['r'].tokens.length).toBe(3000);
    s = reduce(s, { type: 'limits', maxRuns: 100, maxTokens: 512 });
    expect(s.runs['r'].tokens.length).toBeLessThanOrEqual(512);
    expect(tokenCount(s.runs['r'])).toBe(3000);
    expect(s.maxTokens).toBe(512);
  });
});

describe('idempotent replays', () => {
  it('cleared runs stay cleared when the kernel replays its history', () => {
    const replay: Action[] = [
      startAt('a', 100),
      tokens('a', 0, 3),
      endOk('a'),
      startAt('b', 200),
      endOk('b')
    ];
    let s = reduceAll(initialState(), replay);
    s = reduce(s, startAt('live', 300)); // running: survives the clear
    s = reduce(s, { type: 'runs.cleared' });
    expect(s.order).toEqual(['live']);
    const again = reduceAll(s, replay);
    expect(again.order).toEqual(['live']);
    expect(again.runs['a']).toBeUndefined();
    // A new run still appears.
    expect(reduce(again, startAt('c', 400)).order).toEqual(['live', 'c']);
  });

  it('orders runs by start time, whatever order their run.start arrives in', () => {
    // Live runs first, then the replay of older ones (a panel attached late).
    let s = reduceAll(initialState(), [startAt('new', 300), startAt('newer', 400)]);
    s = reduceAll(s, [startAt('old', 100), endOk('old'), startAt('mid', 350)]);
    expect(s.order).toEqual(['old', 'new', 'mid', 'newer']);
    // A run whose tokens came before its run.start waits at the end, then takes its place.
    s = reduce(s, tokens('early', 0, 2));
    expect(s.order[s.order.length - 1]).toBe('early');
    s = reduce(s, startAt('early', 200));
    expect(s.order).toEqual(['old', 'early', 'new', 'mid', 'newer']);
    // The same replay again changes nothing.
    expect(reduceAll(s, [startAt('old', 100), endOk('old'), startAt('mid', 350)])).toBe(s);
  });

  it('the history cap drops the oldest by start time, not by arrival', () => {
    let s = reduce(initialState(), { type: 'limits', maxRuns: 2 });
    s = reduceAll(s, [startAt('b', 200), endOk('b'), startAt('c', 300), endOk('c')]);
    s = reduceAll(s, [startAt('a', 100), endOk('a')]); // replayed, older than both
    expect(s.order).toEqual(['b', 'c']);
  });
});
