/**
 * Run state of one kernel connection, as a pure reducer: `reduce(state, action) -> state`.
 *
 * No DOM, no Jupyter imports: everything here is tested in plain Node. The reducer never mutates
 * its input; a changed run gets a new object, an unchanged run keeps its identity (so views can
 * skip it by reference).
 *
 * Bounded at scale: a run's tokens and training steps live in chunked logs (`chunklog.ts`), so a
 * batch copies one partial chunk, never the whole run; tokens are capped per run (`maxTokens`,
 * setting `tokensPerRun`): beyond it the oldest chunks are dropped and counted (the kernel's
 * `TokenStream` and recorder still hold the full text). Runs are capped per kernel (`maxRuns`).
 *
 * Replays (`history`) are idempotent: duplicate tokens and steps are ignored, runs the user
 * cleared stay cleared (their ids are remembered, `cleared`), and runs are ordered by their start
 * time (`t0`), whenever their `run.start` arrives.
 */

import { ChunkLog, appendLog, capLog, emptyLog, logForEach, logLast, logTotal } from './chunklog';

import {
  AckMessage,
  DataStepMessage,
  JSONObject,
  KernelToPanelMessage,
  ModelInfo,
  RunEndMessage,
  RunKind,
  RunMetrics,
  RunStartMessage,
  TokenItem,
  TokensMessage,
  TrainStepItem
} from './protocol';

export type RunStatus = 'running' | 'ok' | 'cancelled' | 'error' | 'interrupted';

/** State of the panel's cancel request for a run. */
export interface CancelState {
  /** Request id sent with the `cancel` message (echoed by the kernel's `ack`). */
  id: string;
  /** 'pending': sent, no ack yet; 'acknowledged': ack ok; 'refused': ack not ok; 'failed': never reached the kernel. */
  state: 'pending' | 'acknowledged' | 'refused' | 'failed';
  error: string | null;
}

export interface TrainStep {
  step: number;
  loss: number;
  lr: number;
  tok_s: number | null;
}

export interface TrainEval {
  step: number;
  val_loss: number;
  ppl: number | null;
  metrics: { [name: string]: number };
}

export interface CheckpointInfo {
  step: number;
  path: string;
}

export interface RunState {
  id: string;
  /** 'unknown' while the run is a placeholder (tokens or run.end arrived before run.start). */
  kind: RunKind | 'unknown';
  model: ModelInfo | null;
  config: JSONObject;
  /** Wall-clock start, ms since the epoch; null until run.start arrives. */
  t0: number | null;
  status: RunStatus;
  /** True until a run.start for this run arrives. */
  placeholder: boolean;
  /**
   * Tokens kept, in arrival order (duplicates are not appended); at most the state's `maxTokens`:
   * `tokens.dropped` counts the oldest ones dropped by that cap.
   */
  tokens: ChunkLog<TokenItem>;
  /** The run's first token (kept for TTFT and tokens/s when the cap dropped it). */
  firstToken: TokenItem | null;
  /** True once a token carrying `logprob` / `top` arrived (`generate(..., logprobs=k)`). */
  logprobs: boolean;
  /** The index the next token should carry (last appended i + 1). */
  nextIndex: number;
  /** Items whose i was below the expected index: ignored. */
  dups: number;
  /** Items whose i was above the expected index (something was dropped): still appended. */
  gaps: number;
  metrics: RunMetrics | null;
  error: string | null;
  /** Training steps in step order (a chunked log: appending one step copies no history). */
  steps: ChunkLog<TrainStep>;
  evals: readonly TrainEval[];
  checkpoints: readonly CheckpointInfo[];
  cancel: CancelState | null;
}

/** What the kernel connection under the comm is doing. */
export type LinkState = 'ok' | 'websocket-lost' | 'disconnected' | 'restarting' | 'dead';

export interface ConnectionState {
  /** A hello arrived on the current comm (reset by a restart or a closed comm). */
  connected: boolean;
  /** The websocket and the kernel process ('ok' unless lost, restarting or dead). */
  link: LinkState;
  /** The comm was closed (by the kernel, or the kernel went away) and no new one opened yet. */
  commClosed: boolean;
  /** The kernel facts from hello. */
  kernel: JSONObject | null;
  /** The protocol version the kernel announced in hello. */
  kernelProtocol: number | null;
  /** Set when the kernel speaks a newer protocol: the text to show the user. */
  protocolMismatch: string | null;
  /** How many malformed messages were ignored. */
  ignored: number;
  /** How many times the kernel restarted while followed. */
  restarts: number;
  /** The last `history` request sent to this kernel, and its fate. */
  history: HistoryRequestState | null;
}

/** State of the panel's last `history` request (replay of the kernel's recorded runs). */
export interface HistoryRequestState {
  id: string;
  state: 'pending' | 'acknowledged' | 'refused' | 'failed';
  error: string | null;
}

export interface State {
  /** Runs by id. */
  runs: Readonly<{ [id: string]: RunState }>;
  /** Run ids in start order (order of first appearance). */
  order: readonly string[];
  connection: ConnectionState;
  /** The latest data-preparation steps, oldest first (at most `MAX_DATA_STEPS`). */
  dataSteps: readonly DataStepMessage[];
  /**
   * At most this many runs are kept (setting `historySize`): when a new run appears beyond it,
   * the oldest runs that are no longer running are dropped, so a long session stays bounded.
   */
  maxRuns: number;
  /** At most this many tokens are kept per run (setting `tokensPerRun`). */
  maxTokens: number;
  /**
   * Ids of runs the user cleared (at most `MAX_CLEARED`, oldest forgotten first): a replay of the
   * kernel's history does not bring them back.
   */
  cleared: ReadonlySet<string>;
}

/** Default of the `historySize` setting. */
export const DEFAULT_MAX_RUNS = 100;

/** Default of the `tokensPerRun` setting: tokens kept per run (16 chunks). */
export const DEFAULT_MAX_TOKENS = 4096;

/** How many cleared run ids are remembered (the kernel replays at most 200 runs). */
export const MAX_CLEARED = 1000;

/** How many `data.step` messages the store keeps. */
export const MAX_DATA_STEPS = 200;

export type Action =
  /** A validated kernel → panel message. */
  | { type: 'message'; message: KernelToPanelMessage }
  /** A message from a newer protocol major version arrived. */
  | { type: 'protocol.mismatch'; version: number; reason: string }
  /** A malformed message was ignored. */
  | { type: 'malformed'; reason: string }
  /** The kernel restarted (or died): running runs are interrupted. */
  | { type: 'kernel.restarted' }
  /** The comm closed (kernel side closed it, or the kernel went away). */
  | { type: 'comm.closed' }
  /** The websocket or the kernel process changed state. */
  | { type: 'link'; link: LinkState }
  /**
   * The panel re-attached to a comm the kernel had opened before this page loaded (page
   * reload): no hello will come on it, but the connection is live.
   */
  | { type: 'comm.reattached' }
  /** The panel sent a cancel request for `run`. */
  | { type: 'cancel.requested'; run: string; id: string }
  /** The cancel request could not be sent or will never be answered. */
  | { type: 'cancel.failed'; run: string; id: string; error: string }
  /** The panel sent a `history` request. */
  | { type: 'history.requested'; id: string }
  /** The `history` request could not be sent. */
  | { type: 'history.failed'; id: string; error: string }
  /** Forget every run that is no longer running (command "Clear history"). */
  | { type: 'runs.cleared' }
  /**
   * Change the caps: runs per kernel (setting `historySize`; drops the oldest ended runs beyond
   * it) and tokens per run (setting `tokensPerRun`; drops the oldest tokens beyond it).
   */
  | { type: 'limits'; maxRuns: number; maxTokens?: number };

export function initialState(): State {
  return {
    runs: {},
    order: [],
    dataSteps: [],
    maxRuns: DEFAULT_MAX_RUNS,
    maxTokens: DEFAULT_MAX_TOKENS,
    cleared: new Set<string>(),
    connection: {
      connected: false,
      link: 'ok',
      commClosed: false,
      kernel: null,
      kernelProtocol: null,
      protocolMismatch: null,
      ignored: 0,
      restarts: 0,
      history: null
    }
  };
}

export function newRun(id: string): RunState {
  return {
    id,
    kind: 'unknown',
    model: null,
    config: {},
    t0: null,
    status: 'running',
    placeholder: true,
    tokens: emptyLog<TokenItem>(),
    firstToken: null,
    logprobs: false,
    nextIndex: 0,
    dups: 0,
    gaps: 0,
    metrics: null,
    error: null,
    steps: emptyLog<TrainStep>(),
    evals: [],
    checkpoints: [],
    cancel: null
  };
}

/** Runs in start order. */
export function runList(state: State): RunState[] {
  return state.order.map(id => state.runs[id]);
}

/** The text of the tokens a run keeps (all of them unless the cap dropped some). */
export function runText(run: RunState): string {
  const parts: string[] = [];
  logForEach(run.tokens, t => parts.push(t.text));
  return parts.join('');
}

/** Tokens received for a run, kept or dropped by the cap. */
export function tokenCount(run: RunState): number {
  return logTotal(run.tokens);
}

/**
 * `order` with `id` placed by start time: after every run that started at or before it (ties keep
 * arrival order), before runs whose start is unknown yet (placeholders), which stay last.
 */
function placeByStart(
  order: readonly string[],
  runs: Readonly<{ [id: string]: RunState }>,
  id: string
): string[] {
  const rest = order.filter(x => x !== id);
  const t0 = runs[id].t0;
  if (t0 === null) {
    rest.push(id);
    return rest;
  }
  let at = rest.length;
  for (let k = 0; k < rest.length; k++) {
    const other = runs[rest[k]].t0;
    if (other === null || other > t0) {
      at = k;
      break;
    }
  }
  rest.splice(at, 0, id);
  return rest;
}

function withRun(state: State, id: string, update: (run: RunState) => RunState): State {
  const existing = state.runs[id];
  const run = update(existing ?? newRun(id));
  if (run === existing) {
    return state;
  }
  const runs = { ...state.runs, [id]: run };
  const moved = existing === undefined || existing.t0 !== run.t0;
  const next: State = {
    ...state,
    runs,
    order: moved ? placeByStart(state.order, runs, id) : state.order
  };
  if (existing === undefined) {
    return capRuns(next, run.t0 ?? Infinity);
  }
  // A run that ends may now be the one to drop (a replayed run older than the ones kept).
  return existing.status === 'running' && run.status !== 'running' ? capRuns(next) : next;
}

/**
 * Drop the oldest ended runs (by start time) while there are more than `state.maxRuns`; running
 * runs are never dropped. `startedBy`: only runs that started no later than this (a run just
 * added drops older ones, never newer ones: a replayed old run is dropped once it has ended).
 */
function capRuns(state: State, startedBy = Infinity): State {
  let excess = state.order.length - Math.max(1, state.maxRuns);
  if (excess <= 0) {
    return state;
  }
  const drop = new Set<string>();
  for (const id of state.order) {
    if (excess <= 0) {
      break;
    }
    const run = state.runs[id];
    if (run.t0 !== null && run.t0 > startedBy) {
      break; // in start order: every later run started later too
    }
    if (run.status !== 'running') {
      drop.add(id);
      excess--;
    }
  }
  if (drop.size === 0) {
    return state;
  }
  const runs: { [id: string]: RunState } = {};
  const order = state.order.filter(id => !drop.has(id));
  for (const id of order) {
    runs[id] = state.runs[id];
  }
  return { ...state, runs, order };
}

/**
 * The store's copy of a token item: the known fields only (extra fields of later v1 additions are
 * not kept), `logprob` and `top` only when present, so a run without logprobs stays as small; `draft`
 * only when true.
 */
function tokenOf(item: TokenItem): TokenItem {
  const token: TokenItem = { i: item.i, id: item.id, text: item.text, ms: item.ms };
  if (item.logprob !== undefined && item.top !== undefined) {
    token.logprob = item.logprob;
    token.top = item.top;
  }
  if (item.draft === true) {
    token.draft = true; // speculative decoding: proposed by the draft, accepted by the target
  }
  return token;
}

function appendTokens(run: RunState, msg: TokensMessage, cap: number): RunState {
  if (msg.items.length === 0) {
    return run;
  }
  let next = run.nextIndex;
  let dups = run.dups;
  let gaps = run.gaps;
  const added: TokenItem[] = [];
  let logprobs = run.logprobs;
  for (const item of msg.items) {
    if (item.i < next) {
      dups++;
      continue;
    }
    if (item.i > next) {
      gaps++;
    }
    const token = tokenOf(item);
    added.push(token);
    logprobs = logprobs || token.logprob !== undefined;
    next = item.i + 1;
  }
  if (added.length === 0) {
    return { ...run, dups };
  }
  return {
    ...run,
    tokens: appendLog(run.tokens, added, cap),
    firstToken: run.firstToken ?? added[0],
    logprobs,
    nextIndex: next,
    dups,
    gaps
  };
}

function startRun(run: RunState, msg: RunStartMessage): RunState {
  if (!run.placeholder) {
    // A repeated run.start (same message delivered twice) changes nothing.
    return run;
  }
  return {
    ...run,
    placeholder: false,
    kind: msg.kind,
    model: msg.model,
    config: msg.config,
    t0: msg.t0
  };
}

function sameMetrics(a: RunMetrics | null, b: RunMetrics): boolean {
  return (
    a !== null &&
    (Object.keys(b) as (keyof RunMetrics)[]).every(k => a[k] === b[k]) &&
    Object.keys(a).length === Object.keys(b).length
  );
}

function endRun(run: RunState, msg: RunEndMessage): RunState {
  if (
    run.status === msg.status &&
    run.error === msg.error &&
    sameMetrics(run.metrics, msg.metrics)
  ) {
    return run; // the same run.end again (a replay)
  }
  return { ...run, status: msg.status, metrics: msg.metrics, error: msg.error };
}

function isNewStep(items: readonly { step: number }[], step: number): boolean {
  return items.length === 0 || step > items[items.length - 1].step;
}

/**
 * `run` with the steps of `items` that come after its last one appended, in one copy of the
 * log's last chunk (a `train.steps` batch is one append, like a `tokens` batch).
 */
function appendSteps(run: RunState, items: readonly TrainStepItem[]): RunState {
  let last = logLast(run.steps)?.step ?? -Infinity;
  const added: TrainStep[] = [];
  for (const item of items) {
    if (item.step > last) {
      added.push({ step: item.step, loss: item.loss, lr: item.lr, tok_s: item.tok_s });
      last = item.step;
    }
  }
  return added.length === 0 ? run : { ...run, steps: appendLog(run.steps, added) };
}

/** Messages about one run: ignored once the user cleared that run (a replay must not revive it). */
function clearedRun(state: State, msg: KernelToPanelMessage): boolean {
  return msg.type !== 'hello' && msg.type !== 'ack' && msg.type !== 'data.step' && msg.run !== null
    ? state.cleared.has(msg.run)
    : false;
}

function applyAck(state: State, msg: AckMessage): State {
  const h = state.connection.history;
  if (h !== null && h.id === msg.id) {
    return {
      ...state,
      connection: {
        ...state.connection,
        history: { id: msg.id, state: msg.ok ? 'acknowledged' : 'refused', error: msg.error }
      }
    };
  }
  const matches = (r: RunState | undefined): r is RunState =>
    r !== undefined && r.cancel !== null && r.cancel.id === msg.id;
  let target: RunState | undefined = msg.run !== null ? state.runs[msg.run] : undefined;
  if (!matches(target)) {
    target = state.order.map(id => state.runs[id]).find(matches);
  }
  if (!matches(target) || target.cancel === null) {
    return state; // an ack for a request this panel does not know: nothing to update
  }
  const cancel: CancelState = {
    id: msg.id,
    state: msg.ok ? 'acknowledged' : 'refused',
    error: msg.error
  };
  return withRun(state, target.id, run => ({ ...run, cancel }));
}

function applyMessage(state: State, msg: KernelToPanelMessage): State {
  if (clearedRun(state, msg)) {
    return state;
  }
  switch (msg.type) {
    case 'hello':
      return {
        ...state,
        connection: {
          ...state.connection,
          connected: true,
          commClosed: false,
          kernel: msg.kernel,
          kernelProtocol: msg.version,
          protocolMismatch: null
        }
      };
    case 'run.start':
      return withRun(state, msg.run, run => startRun(run, msg));
    case 'tokens':
      return withRun(state, msg.run, run => appendTokens(run, msg, state.maxTokens));
    case 'run.end':
      return withRun(state, msg.run, run => endRun(run, msg));
    // A step at or below the last one recorded is a replay (history request) of what is
    // shown already: ignored, like duplicate tokens. `train.steps` is a batch of them.
    case 'train.step':
      return withRun(state, msg.run, run => appendSteps(run, [msg]));
    case 'train.steps':
      return withRun(state, msg.run, run => appendSteps(run, msg.items));
    case 'train.eval': {
      const ev: TrainEval = {
        step: msg.step,
        val_loss: msg.val_loss,
        ppl: msg.ppl,
        metrics: msg.metrics
      };
      return withRun(state, msg.run, run =>
        isNewStep(run.evals, msg.step) ? { ...run, evals: [...run.evals, ev] } : run
      );
    }
    case 'checkpoint': {
      const ck: CheckpointInfo = { step: msg.step, path: msg.path };
      return withRun(state, msg.run, run =>
        isNewStep(run.checkpoints, msg.step)
          ? { ...run, checkpoints: [...run.checkpoints, ck] }
          : run
      );
    }
    case 'data.step':
      return { ...state, dataSteps: [...state.dataSteps.slice(1 - MAX_DATA_STEPS), msg] };
    case 'ack':
      return applyAck(state, msg);
    case 'batch': // its run events in order, as if they had come one by one (one update for all)
      return msg.messages.reduce(applyMessage, state);
  }
}

function interruptAll(state: State, failCancels: string): State {
  let runs: { [id: string]: RunState } | null = null;
  for (const id of state.order) {
    const run = state.runs[id];
    const running = run.status === 'running';
    const pending = run.cancel !== null && run.cancel.state === 'pending';
    if (!running && !pending) {
      continue;
    }
    runs = runs ?? { ...state.runs };
    runs[id] = {
      ...run,
      status: running ? 'interrupted' : run.status,
      cancel:
        pending && run.cancel !== null
          ? { ...run.cancel, state: 'failed', error: failCancels }
          : run.cancel
    };
  }
  return runs === null ? state : { ...state, runs };
}

/** The reducer. Pure: never mutates `state`, returns `state` itself when nothing changed. */
export function reduce(state: State, action: Action): State {
  switch (action.type) {
    case 'message':
      return applyMessage(state, action.message);
    case 'protocol.mismatch':
      return {
        ...state,
        connection: { ...state.connection, protocolMismatch: action.reason }
      };
    case 'malformed':
      return {
        ...state,
        connection: { ...state.connection, ignored: state.connection.ignored + 1 }
      };
    case 'kernel.restarted': {
      const next = interruptAll(state, 'the kernel restarted');
      return {
        ...next,
        connection: {
          ...next.connection,
          connected: false,
          kernel: null,
          kernelProtocol: null,
          protocolMismatch: null,
          restarts: next.connection.restarts + 1
        }
      };
    }
    case 'comm.closed': {
      // Runs may still end later on a new comm, so they stay as they are; only requests that
      // can no longer be answered fail.
      let next = state;
      for (const id of state.order) {
        const c = state.runs[id].cancel;
        if (c !== null && c.state === 'pending') {
          next = withRun(next, id, run => ({
            ...run,
            cancel: { ...c, state: 'failed', error: 'the comm closed' }
          }));
        }
      }
      return { ...next, connection: { ...next.connection, connected: false, commClosed: true } };
    }
    case 'comm.reattached':
      return state.connection.connected
        ? state
        : { ...state, connection: { ...state.connection, connected: true, commClosed: false } };
    case 'link':
      return action.link === state.connection.link
        ? state
        : { ...state, connection: { ...state.connection, link: action.link } };
    case 'cancel.requested':
      return withRun(state, action.run, run => ({
        ...run,
        cancel: { id: action.id, state: 'pending', error: null }
      }));
    case 'cancel.failed':
      return withRun(state, action.run, run =>
        run.cancel !== null && run.cancel.id === action.id
          ? { ...run, cancel: { ...run.cancel, state: 'failed', error: action.error } }
          : run
      );
    case 'history.requested':
      return {
        ...state,
        connection: {
          ...state.connection,
          history: { id: action.id, state: 'pending', error: null }
        }
      };
    case 'history.failed': {
      const h = state.connection.history;
      if (h === null || h.id !== action.id) {
        return state;
      }
      return {
        ...state,
        connection: { ...state.connection, history: { ...h, state: 'failed', error: action.error } }
      };
    }
    case 'runs.cleared': {
      const order = state.order.filter(id => state.runs[id].status === 'running');
      if (order.length === state.order.length) {
        return state;
      }
      const runs: { [id: string]: RunState } = {};
      for (const id of order) {
        runs[id] = state.runs[id];
      }
      const cleared = new Set(state.cleared);
      for (const id of state.order) {
        if (runs[id] === undefined) {
          cleared.delete(id); // re-added last: forgotten last
          cleared.add(id);
        }
      }
      for (const id of cleared) {
        if (cleared.size <= MAX_CLEARED) {
          break;
        }
        cleared.delete(id);
      }
      return { ...state, runs, order, cleared };
    }
    case 'limits': {
      const maxRuns = Math.max(1, Math.floor(action.maxRuns));
      const maxTokens =
        action.maxTokens === undefined
          ? state.maxTokens
          : Math.max(1, Math.floor(action.maxTokens));
      if (maxRuns === state.maxRuns && maxTokens === state.maxTokens) {
        return state;
      }
      let next: State = { ...state, maxRuns, maxTokens };
      if (maxTokens < state.maxTokens) {
        let runs: { [id: string]: RunState } | null = null;
        for (const id of state.order) {
          const run = state.runs[id];
          const tokens = capLog(run.tokens, maxTokens);
          if (tokens !== run.tokens) {
            runs = runs ?? { ...state.runs };
            runs[id] = { ...run, tokens };
          }
        }
        next = runs === null ? next : { ...next, runs };
      }
      return capRuns(next);
    }
  }
}

/** One word for the connection as the panel shows it (`data-link`), and the sentence for it. */
export function linkSummary(c: ConnectionState): { state: string; text: string } {
  switch (c.link) {
    case 'dead':
      return { state: 'dead', text: 'kernel dead: restart it to continue' };
    case 'restarting':
      return { state: 'restarting', text: 'kernel restarting…' };
    case 'websocket-lost':
      return { state: 'websocket-lost', text: 'connection to the kernel lost: reconnecting…' };
    case 'disconnected':
      // JupyterLab gave up (or the server closed the socket on purpose): it will not reconnect by itself
      return {
        state: 'disconnected',
        text: 'disconnected from the kernel: Kernel ▸ Reconnect to Kernel'
      };
    case 'ok':
      break;
  }
  if (c.connected) {
    return { state: 'connected', text: 'connected' };
  }
  if (c.commClosed) {
    return {
      state: 'comm-closed',
      text: 'aigc_lab comm closed: import aigc_lab again to reconnect'
    };
  }
  return { state: 'waiting', text: 'waiting for aigc_lab' };
}

/** Reduce a sequence of actions (handy for tests and replays). */
export function reduceAll(state: State, actions: Iterable<Action>): State {
  let s = state;
  for (const a of actions) {
    s = reduce(s, a);
  }
  return s;
}

export type Listener = (state: State, previous: State) => void;

/** A minimal observable holder of `State` (one per kernel connection). Still DOM-free. */
export class Store {
  constructor(state: State = initialState()) {
    this._state = state;
  }

  get state(): State {
    return this._state;
  }

  dispatch(action: Action): void {
    const previous = this._state;
    const next = reduce(previous, action);
    if (next === previous) {
      return;
    }
    this._state = next;
    for (const listener of Array.from(this._listeners)) {
      try {
        listener(next, previous);
      } catch (e) {
        console.error('[aigc-lab] store listener failed', e);
      }
    }
  }

  /** Subscribe to changes; returns the unsubscribe function. */
  subscribe(listener: Listener): () => void {
    this._listeners.add(listener);
    return () => {
      this._listeners.delete(listener);
    };
  }

  private _state: State;
  private _listeners = new Set<Listener>();
}
