/**
 * The aigc-lab wire protocol, version 1 (docs/protocol.md).
 *
 * This file mirrors `aigc_lab/events.py` (`PROTOCOL_VERSION`, `from_message`). Both are checked
 * against the shared fixtures in `tests/fixtures/protocol/{valid,invalid}/`, so the two halves
 * cannot drift. Anything that arrives over the comm goes through `parseMessage` first; nothing
 * downstream ever sees an unchecked value.
 */

/** Protocol major version spoken by this panel. Independent of the package version. */
export const PROTOCOL_VERSION = 1;

/** Comm target name registered on every followed kernel. */
export const COMM_TARGET = 'aigc_lab';

/** A JSON value (config objects and kernel facts are free-form JSON). */
export type JSONPrimitive = string | number | boolean | null;
export type JSONValue = JSONPrimitive | JSONObject | JSONValue[];
export interface JSONObject {
  [key: string]: JSONValue;
}

export type RunKind = 'generate' | 'train' | 'bench';
export type RunEndStatus = 'ok' | 'cancelled' | 'error';

export const RUN_KINDS: readonly RunKind[] = ['generate', 'train', 'bench'];
export const RUN_END_STATUSES: readonly RunEndStatus[] = ['ok', 'cancelled', 'error'];

/** Roles of a chat turn (`config.chat.messages`), as the kernel normalizes them. */
export type ChatRole = 'system' | 'user' | 'assistant' | 'tool';
export const CHAT_ROLES: readonly ChatRole[] = ['system', 'user', 'assistant', 'tool'];

/** One turn of the conversation a chat run answers (a type, not an interface: a JSON value). */
export type ChatTurn = {
  role: ChatRole;
  content: string;
};

/**
 * `run.start.config.chat` (optional, added within v1): the conversation a run started by
 * `al.chat` / `Conversation.say` answers, and the name of its chat template (`chatml`,
 * `llama-3`, `alpaca`, `plain`, or `custom` for Jinja source of the user's own).
 */
export type ChatConfig = {
  messages: ChatTurn[];
  template: string;
};

export interface ModelInfo {
  name: string;
  params: number;
  dtype: string;
  quant: string | null;
  device: string;
}

export interface RunMetrics {
  ttft_ms: number | null;
  /** Always an integer. */
  tokens: number;
  tok_s: number | null;
  itl_p50_ms: number | null;
  itl_p95_ms: number | null;
  peak_mem_mb: number | null;
  /** Speculative runs only (optional, added within v1): share of the draft's proposals accepted. */
  draft_acceptance?: number | null;
  /** Speculative runs only: generated tokens per target forward. */
  tokens_per_step?: number | null;
}

export interface TokenItem {
  /** Token index in the run: integer, from 0, consecutive. */
  i: number;
  /** Token id, or null. */
  id: number | null;
  /** Decoded piece; the concatenation of all pieces is the full text. */
  text: string;
  /** Milliseconds since run start. */
  ms: number;
  /**
   * With `generate(..., logprobs=k)`: the token's log-probability under the model (optional,
   * added within v1; comes together with `top`; absent on the held-back tail item).
   */
  logprob?: number;
  /** The k most likely tokens at this position, most likely first (empty for k = 0). */
  top?: TopToken[];
  /** Speculative runs (optional, added within v1): true when the draft proposed it and the target accepted. */
  draft?: boolean;
}

/** One of the most likely tokens at a position (`top` of a token item). */
export interface TopToken {
  id: number;
  text: string;
  logprob: number;
}

interface Envelope<T extends string, R extends string | null> {
  v: number;
  type: T;
  run: R;
}

export interface HelloMessage extends Envelope<'hello', null> {
  version: number;
  kernel: JSONObject;
}

export interface RunStartMessage extends Envelope<'run.start', string> {
  kind: RunKind;
  model: ModelInfo;
  config: JSONObject;
  t0: number;
}

export interface TokensMessage extends Envelope<'tokens', string> {
  items: TokenItem[];
}

export interface RunEndMessage extends Envelope<'run.end', string> {
  status: RunEndStatus;
  metrics: RunMetrics;
  error: string | null;
}

/** One training step (a `train.step`'s fields; an item of `train.steps`). */
export interface TrainStepItem {
  step: number;
  loss: number;
  lr: number;
  tok_s: number | null;
  /** Fractional epochs done, when known. */
  epoch: number | null;
  /** Estimated seconds to the end of the run, when known. */
  eta_s: number | null;
}

export interface TrainStepMessage extends Envelope<'train.step', string>, TrainStepItem {}

/**
 * A batch of one run's training steps, in step order (added within v1): the kernel's comm sink
 * batches steps as it batches tokens.
 */
export interface TrainStepsMessage extends Envelope<'train.steps', string> {
  items: TrainStepItem[];
}

export interface TrainEvalMessage extends Envelope<'train.eval', string> {
  step: number;
  val_loss: number;
  ppl: number | null;
  metrics: { [name: string]: number };
}

export interface CheckpointMessage extends Envelope<'checkpoint', string> {
  step: number;
  path: string;
}

/** One data-preparation step (rows in/out and what happened to the others). */
export interface DataStepMessage extends Envelope<'data.step', string> {
  step: string;
  rows_in: number;
  rows_out: number;
  changed: number;
  detail: { [key: string]: unknown };
}

export interface AckMessage extends Envelope<'ack', string | null> {
  id: string;
  ok: boolean;
  error: string | null;
}

/** A run event: what a `batch` may hold (`hello` and `ack` travel alone). */
export type RunEventMessage =
  | RunStartMessage
  | TokensMessage
  | RunEndMessage
  | TrainStepMessage
  | TrainStepsMessage
  | TrainEvalMessage
  | CheckpointMessage
  | DataStepMessage;

export const BATCHABLE: readonly RunEventMessage['type'][] = [
  'run.start',
  'tokens',
  'run.end',
  'train.step',
  'train.steps',
  'train.eval',
  'checkpoint',
  'data.step'
];

/**
 * Several run events in one comm message, in publish order (added within v1): the browser pays
 * about a millisecond per comm message whatever its size, so the kernel's sink sends a flood of
 * small messages as a few batches. Handled exactly as its messages one by one, in order.
 */
export interface BatchMessage extends Envelope<'batch', null> {
  messages: RunEventMessage[];
}

/** Panel → kernel. */
export interface CancelMessage extends Envelope<'cancel', string> {
  id: string;
}

export type KernelToPanelMessage = HelloMessage | RunEventMessage | BatchMessage | AckMessage;

/** Panel → kernel: replay the kernel's recorded runs (answered by an `ack`, then the runs). */
export interface HistoryMessage extends Envelope<'history', null> {
  id: string;
}

export type PanelToKernelMessage = CancelMessage | HistoryMessage;

export type Message = KernelToPanelMessage | PanelToKernelMessage;

export type MessageType = Message['type'];

/** Outcome of `parseMessage`. */
export type ParseResult =
  | { ok: true; message: Message }
  | {
      ok: false;
      /** 'newer-version': the sender speaks a protocol newer than this panel. */
      kind: 'invalid' | 'newer-version';
      reason: string;
      /** The sender's protocol version, when kind is 'newer-version'. */
      version?: number;
    };

// ---------------------------------------------------------------------------------------------
// Checks (mirroring aigc_lab/events.py)

type Check = (x: unknown) => boolean;

const isInt: Check = x => typeof x === 'number' && Number.isInteger(x);
const isNum: Check = x => typeof x === 'number';
const isStr: Check = x => typeof x === 'string';
const isBool: Check = x => typeof x === 'boolean';
const isNull: Check = x => x === null;
const isArr: Check = x => Array.isArray(x);
const opt =
  (check: Check): Check =>
  x =>
    x === null || check(x);
const oneOf =
  (...values: readonly string[]): Check =>
  x =>
    typeof x === 'string' && values.includes(x);

export function isObject(x: unknown): x is { [key: string]: unknown } {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

type Spec = { [field: string]: Check };

const MODEL_FIELDS: Spec = {
  name: isStr,
  params: isInt,
  dtype: isStr,
  quant: opt(isStr),
  device: isStr
};

const METRIC_FIELDS: Spec = {
  ttft_ms: opt(isNum),
  tokens: isInt,
  tok_s: opt(isNum),
  itl_p50_ms: opt(isNum),
  itl_p95_ms: opt(isNum),
  peak_mem_mb: opt(isNum)
};

const CHAT_FIELDS: Spec = { messages: isArr, template: isStr };
const TURN_FIELDS: Spec = { role: oneOf(...CHAT_ROLES), content: isStr };

const ITEM_FIELDS: Spec = { i: isInt, id: opt(isInt), text: isStr, ms: isNum };
const TOP_FIELDS: Spec = { id: isInt, text: isStr, logprob: isNum };
const STEP_FIELDS: Spec = {
  step: isInt,
  loss: isNum,
  lr: isNum,
  tok_s: opt(isNum),
  epoch: opt(isNum),
  eta_s: opt(isNum)
};

/** type -> [check of `run`, field checks] */
const SPECS: { [type in MessageType]: [Check, Spec] } = {
  hello: [isNull, { version: isInt, kernel: isObject }],
  'run.start': [isStr, { kind: oneOf(...RUN_KINDS), model: isObject, config: isObject, t0: isNum }],
  tokens: [isStr, { items: isArr }],
  'run.end': [isStr, { status: oneOf(...RUN_END_STATUSES), metrics: isObject, error: opt(isStr) }],
  'train.step': [isStr, STEP_FIELDS],
  'train.steps': [isStr, { items: isArr }],
  'train.eval': [isStr, { step: isInt, val_loss: isNum, ppl: opt(isNum), metrics: isObject }],
  checkpoint: [isStr, { step: isInt, path: isStr }],
  'data.step': [
    isStr,
    { step: isStr, rows_in: isInt, rows_out: isInt, changed: isInt, detail: isObject }
  ],
  cancel: [isStr, { id: isStr }],
  history: [isNull, { id: isStr }],
  ack: [opt(isStr), { id: isStr, ok: isBool, error: opt(isStr) }],
  batch: [isNull, { messages: isArr }]
};

class ProtocolError extends Error {}

function show(x: unknown): string {
  if (x === undefined) {
    return 'undefined';
  }
  try {
    const s: unknown = JSON.stringify(x);
    if (typeof s !== 'string') {
      return String(x);
    }
    return s.length > 60 ? s.slice(0, 57) + '...' : s;
  } catch {
    return String(x);
  }
}

function checkFields(obj: { [key: string]: unknown }, spec: Spec, where: string): void {
  for (const name of Object.keys(spec)) {
    if (!(name in obj)) {
      throw new ProtocolError(`${where}: missing field '${name}'`);
    }
    if (!spec[name](obj[name])) {
      throw new ProtocolError(`${where}: field '${name}' has an invalid value ${show(obj[name])}`);
    }
  }
}

/**
 * A token item's optional `logprob` and `top`: both or neither (as `_logprob_fields` in
 * events.py), and every `top` entry a full `{id, text, logprob}`.
 */
function checkLogprobFields(item: { [key: string]: unknown }, where: string): void {
  if (!('logprob' in item) && !('top' in item)) {
    return;
  }
  const top = item['top'];
  if (!isNum(item['logprob']) || !Array.isArray(top)) {
    throw new ProtocolError(`${where}: 'logprob' (a number) and 'top' (an array) come together`);
  }
  top.forEach((alt: unknown, m: number) => {
    if (!isObject(alt)) {
      throw new ProtocolError(`${where}.top[${m}] must be an object`);
    }
    checkFields(alt, TOP_FIELDS, `${where}.top[${m}]`);
  });
}

/** A token item's optional `draft` flag (as `_draft_field` in events.py). */
function checkDraftField(item: { [key: string]: unknown }, where: string): void {
  if ('draft' in item && typeof item['draft'] !== 'boolean') {
    throw new ProtocolError(`${where}: 'draft' must be true or false`);
  }
}

/** `run.start.config.chat`, when present (as `_chat_config` in events.py). */
function checkChatConfig(config: { [key: string]: unknown }): void {
  if (!('chat' in config)) {
    return;
  }
  const chat = config['chat'];
  if (!isObject(chat)) {
    throw new ProtocolError(
      'run.start.config.chat must be an object {messages: [{role, content}, ...], template}'
    );
  }
  checkFields(chat, CHAT_FIELDS, 'run.start.config.chat');
  (chat['messages'] as unknown[]).forEach((turn: unknown, n: number) => {
    const where = `run.start.config.chat.messages[${n}]`;
    if (!isObject(turn)) {
      throw new ProtocolError(`${where} must be an object {role, content}`);
    }
    checkFields(turn, TURN_FIELDS, where);
  });
}

/**
 * The conversation of a chat run (`config.chat`, checked by `parseMessage`), or null for any other
 * run. Re-checked here, so a config from elsewhere can never be misread.
 */
export function chatOf(config: JSONObject): ChatConfig | null {
  if (config['chat'] === undefined) {
    return null;
  }
  try {
    checkChatConfig(config);
  } catch {
    return null;
  }
  return config['chat'] as unknown as ChatConfig;
}

const SPECULATIVE_METRICS = ['draft_acceptance', 'tokens_per_step'] as const;

/** `run.end.metrics`' optional speculative figures: numbers or null (as `_speculative_metrics`). */
function checkSpeculativeMetrics(metrics: { [key: string]: unknown }): void {
  for (const name of SPECULATIVE_METRICS) {
    if (name in metrics && !(metrics[name] === null || isNum(metrics[name]))) {
      throw new ProtocolError(`run.end.metrics: '${name}' must be a number or null`);
    }
  }
}

function isKnownType(x: unknown): x is MessageType {
  return typeof x === 'string' && Object.prototype.hasOwnProperty.call(SPECS, x);
}

/** The text a panel shows when the kernel speaks a newer protocol. */
export function mismatchText(version: number): string {
  return (
    `The kernel speaks aigc-lab protocol v${version}, but this panel understands ` +
    `v${PROTOCOL_VERSION}: update the aigc-lab extension (pip install -U aigc-lab) and reload the page.`
  );
}

function validate(x: unknown): Message {
  if (!isObject(x)) {
    throw new ProtocolError(
      `a message must be a JSON object, got ${Array.isArray(x) ? 'array' : x === null ? 'null' : typeof x}`
    );
  }
  const v = x['v'];
  if (!isInt(v)) {
    throw new ProtocolError("missing or non-integer protocol version 'v'");
  }
  if ((v as number) < 1) {
    throw new ProtocolError(`protocol version ${v as number} does not exist`);
  }
  const type = x['type'];
  if (!isKnownType(type)) {
    throw new ProtocolError(`unknown message type ${show(type)}`);
  }
  const [runCheck, spec] = SPECS[type];
  if (!('run' in x) || !runCheck(x['run'])) {
    throw new ProtocolError(`${type}: missing or invalid 'run'`);
  }
  checkFields(x, spec, type);
  switch (type) {
    case 'run.start':
      checkFields(x['model'] as { [key: string]: unknown }, MODEL_FIELDS, 'run.start.model');
      checkChatConfig(x['config'] as { [key: string]: unknown });
      break;
    case 'run.end':
      checkFields(x['metrics'] as { [key: string]: unknown }, METRIC_FIELDS, 'run.end.metrics');
      checkSpeculativeMetrics(x['metrics'] as { [key: string]: unknown });
      break;
    case 'tokens': {
      const items = x['items'] as unknown[];
      for (let n = 0; n < items.length; n++) {
        const item = items[n];
        if (!isObject(item)) {
          throw new ProtocolError(`tokens.items[${n}] must be an object`);
        }
        checkFields(item, ITEM_FIELDS, `tokens.items[${n}]`);
        checkLogprobFields(item, `tokens.items[${n}]`);
        checkDraftField(item, `tokens.items[${n}]`);
      }
      break;
    }
    case 'train.steps': {
      const items = x['items'] as unknown[];
      for (let n = 0; n < items.length; n++) {
        const item = items[n];
        if (!isObject(item)) {
          throw new ProtocolError(`train.steps.items[${n}] must be an object`);
        }
        checkFields(item, STEP_FIELDS, `train.steps.items[${n}]`);
      }
      break;
    }
    case 'train.eval': {
      const metrics = x['metrics'] as { [key: string]: unknown };
      for (const key of Object.keys(metrics)) {
        if (!isNum(metrics[key])) {
          throw new ProtocolError(`train.eval.metrics['${key}'] must be a number`);
        }
      }
      break;
    }
    case 'batch': {
      const messages = x['messages'] as unknown[];
      for (let n = 0; n < messages.length; n++) {
        const inner = messages[n];
        const kind = isObject(inner) ? inner['type'] : undefined;
        if (isObject(inner) && isInt(inner['v']) && (inner['v'] as number) > PROTOCOL_VERSION) {
          throw new ProtocolError(`batch.messages[${n}]: ${mismatchText(inner['v'] as number)}`);
        }
        if (isKnownType(kind) && !(BATCHABLE as readonly string[]).includes(kind)) {
          throw new ProtocolError(
            `batch.messages[${n}]: a batch holds run events only, not ${show(kind)}`
          );
        }
        try {
          validate(inner);
        } catch (e) {
          if (e instanceof ProtocolError) {
            throw new ProtocolError(`batch.messages[${n}]: ${e.message}`);
          }
          throw e;
        }
      }
      break;
    }
    default:
      break;
  }
  // Every field named by the type has been checked above; extra fields (later minor additions
  // within the same major version) are carried along untouched, as in events.py.
  return x as unknown as Message;
}

/**
 * Validate an incoming value. Never throws.
 *
 * A message whose `v` is a larger integer than `PROTOCOL_VERSION` is rejected with
 * `kind: 'newer-version'` (whatever else it holds), so the panel can tell the user to update
 * instead of misrendering. A `hello` whose `version` is newer is treated the same way.
 */
export function parseMessage(x: unknown): ParseResult {
  if (isObject(x) && isInt(x['v']) && (x['v'] as number) > PROTOCOL_VERSION) {
    const version = x['v'] as number;
    return { ok: false, kind: 'newer-version', version, reason: mismatchText(version) };
  }
  let message: Message;
  try {
    message = validate(x);
  } catch (e) {
    if (e instanceof ProtocolError) {
      return { ok: false, kind: 'invalid', reason: e.message };
    }
    return { ok: false, kind: 'invalid', reason: `unexpected validation failure: ${String(e)}` };
  }
  if (message.type === 'hello' && message.version > PROTOCOL_VERSION) {
    return {
      ok: false,
      kind: 'newer-version',
      version: message.version,
      reason: mismatchText(message.version)
    };
  }
  return { ok: true, message };
}

/** Build a `history` request (panel → kernel). */
export function historyMessage(id: string): HistoryMessage {
  return { v: PROTOCOL_VERSION, type: 'history', run: null, id };
}

/** Build a `cancel` request (panel → kernel). */
export function cancelMessage(run: string, id: string): CancelMessage {
  return { v: PROTOCOL_VERSION, type: 'cancel', run, id };
}
