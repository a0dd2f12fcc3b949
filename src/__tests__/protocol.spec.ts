import { describe, expect, it } from 'vitest';

import { PROTOCOL_VERSION, cancelMessage, chatOf, parseMessage } from '../protocol';
import { fixture, loadFixtures } from './fixtures';

const valid = loadFixtures('valid');
const invalid = loadFixtures('invalid');

describe('shared protocol fixtures', () => {
  it('finds fixtures in both folders', () => {
    expect(valid.length).toBeGreaterThanOrEqual(10);
    expect(invalid.length).toBeGreaterThanOrEqual(8);
  });

  it.each(valid.map(f => [f.name, f.data] as const))('accepts valid/%s', (_name, data) => {
    const result = parseMessage(data);
    if (!result.ok) {
      throw new Error(`rejected: ${result.reason}`);
    }
    expect(result.message).toEqual(data);
  });

  it.each(invalid.map(f => [f.name, f.data] as const))('rejects invalid/%s', (_name, data) => {
    const result = parseMessage(data);
    expect(result.ok).toBe(false);
    if (!result.ok) {
      expect(result.reason).toMatch(/\S/);
    }
  });
});

describe('parseMessage', () => {
  it('speaks version 1', () => {
    expect(PROTOCOL_VERSION).toBe(1);
  });

  it('flags a newer major version distinctly, whatever the message holds', () => {
    const result = parseMessage(fixture('invalid', 'newer_major_version.json'));
    expect(result).toMatchObject({ ok: false, kind: 'newer-version', version: 2 });
    if (!result.ok) {
      expect(result.reason).toContain('protocol v2');
      expect(result.reason).toContain('update the aigc-lab extension');
    }
    expect(parseMessage({ v: 7, type: 'teleport' })).toMatchObject({
      ok: false,
      kind: 'newer-version',
      version: 7
    });
  });

  it('flags a hello announcing a newer version as a mismatch', () => {
    const hello = { ...(fixture('valid', 'hello.json') as object), version: 3 };
    expect(parseMessage(hello)).toMatchObject({ ok: false, kind: 'newer-version', version: 3 });
  });

  it('reports ordinary problems as invalid with a reason naming the field', () => {
    const cases: Array<[unknown, RegExp]> = [
      [null, /JSON object/],
      ['hello', /JSON object/],
      [[1, 2, 3], /got array/],
      [{ type: 'tokens', run: 'r', items: [] }, /'v'/],
      [{ v: '1', type: 'tokens', run: 'r', items: [] }, /'v'/],
      [{ v: 1.5, type: 'tokens', run: 'r', items: [] }, /'v'/],
      [{ v: 0, type: 'tokens', run: 'r', items: [] }, /does not exist/],
      [{ v: 1, type: 'exec', run: null }, /unknown message type/],
      [{ v: 1, type: 'tokens', items: [] }, /'run'/],
      [{ v: 1, type: 'tokens', run: null, items: [] }, /'run'/],
      [{ v: 1, type: 'hello', run: 'x', version: 1, kernel: {} }, /'run'/],
      [{ v: 1, type: 'tokens', run: 'r', items: {} }, /'items'/],
      [{ v: 1, type: 'tokens', run: 'r', items: [5] }, /items\[0\] must be an object/],
      [
        { v: 1, type: 'tokens', run: 'r', items: [{ i: 0, id: 1.5, text: 'a', ms: 1 }] },
        /items\[0\]: field 'id'/
      ],
      [
        { v: 1, type: 'tokens', run: 'r', items: [{ i: 0, id: null, text: 'a', ms: null }] },
        /field 'ms'/
      ],
      [{ v: 1, type: 'ack', run: null, id: 'x', ok: 'yes', error: null }, /field 'ok'/],
      [{ v: 1, type: 'checkpoint', run: 'r', step: 1 }, /missing field 'path'/],
      [
        {
          v: 1,
          type: 'train.eval',
          run: 'r',
          step: 1,
          val_loss: 1,
          ppl: null,
          metrics: { a: 'x' }
        },
        /metrics\['a'\]/
      ]
    ];
    for (const [data, reason] of cases) {
      const result = parseMessage(data);
      expect(result, JSON.stringify(data)).toMatchObject({ ok: false, kind: 'invalid' });
      if (!result.ok) {
        expect(result.reason, JSON.stringify(data)).toMatch(reason);
      }
    }
  });

  it('checks every message of a batch in place, and holds run events only, one level deep', () => {
    const end = { v: 1, type: 'checkpoint', run: 'r', step: 1, path: 'p' };
    const ok = parseMessage({ v: 1, type: 'batch', run: null, messages: [end, end] });
    expect(ok.ok).toBe(true);
    const cases: Array<[unknown[], RegExp]> = [
      [[end, { ...end, path: 3 }], /^batch\.messages\[1\]: checkpoint: field 'path'/],
      [[{ v: 1, type: 'batch', run: null, messages: [] }], /messages\[0\]: .*run events only/],
      [[{ v: 1, type: 'ack', run: null, id: 'x', ok: true, error: null }], /run events only/],
      [[{ v: 1, type: 'cancel', run: 'r', id: 'x' }], /run events only/],
      [[{ ...end, v: 2 }], /messages\[0\]: .*v2/],
      [['end'], /messages\[0\]: .*JSON object/]
    ];
    for (const [messages, reason] of cases) {
      const result = parseMessage({ v: 1, type: 'batch', run: null, messages });
      expect(result, JSON.stringify(messages)).toMatchObject({ ok: false, kind: 'invalid' });
      if (!result.ok) {
        expect(result.reason, JSON.stringify(messages)).toMatch(reason);
      }
    }
    expect(parseMessage({ v: 1, type: 'batch', run: 'r', messages: [] }).ok).toBe(false);
  });

  it('checks nested model and metrics objects', () => {
    const start = fixture('valid', 'run_start_generate.json') as { model: object };
    expect(parseMessage({ ...start, model: { ...start.model, params: '5M' } })).toMatchObject({
      ok: false,
      reason: expect.stringContaining('run.start.model')
    });
    const end = fixture('valid', 'run_end_ok.json') as { metrics: object };
    expect(parseMessage({ ...end, metrics: { ...end.metrics, tokens: 1.5 } })).toMatchObject({
      ok: false,
      reason: expect.stringContaining('run.end.metrics')
    });
    expect(parseMessage({ ...end, metrics: { ...end.metrics, tok_s: undefined } }).ok).toBe(false);
  });

  it('carries extra fields of the same major version along (forward compatible)', () => {
    const msg = { ...(fixture('valid', 'checkpoint.json') as object), bytes: 1234 };
    expect(parseMessage(msg).ok).toBe(true);
  });

  it('builds cancel requests that it would itself accept', () => {
    const msg = cancelMessage('gen-1', 'req-1');
    expect(msg).toEqual({ v: 1, type: 'cancel', run: 'gen-1', id: 'req-1' });
    expect(parseMessage(msg)).toEqual({ ok: true, message: msg });
  });

  it('checks the optional logprob and top of token items like events.py (both or neither)', () => {
    const ok = fixture('valid', 'tokens_logprobs.json') as { items: object[] };
    const parsed = parseMessage(ok);
    expect(parsed.ok).toBe(true);
    if (parsed.ok && parsed.message.type === 'tokens') {
      const [first, , third, tail] = parsed.message.items;
      expect(first.logprob).toBe(-0.105);
      expect(first.top).toEqual([
        { id: 464, text: 'Once', logprob: -0.105 },
        { id: 40, text: 'I', logprob: -2.9 }
      ]);
      expect(third.top).toEqual([]); // logprobs=0
      expect('logprob' in tail || 'top' in tail).toBe(false); // the held-back tail
    }
    const item = { i: 0, id: 7, text: 'a', ms: 1 };
    const batch = (extra: object) => ({
      v: 1,
      type: 'tokens',
      run: 'r',
      items: [{ ...item, ...extra }]
    });
    const cases: Array<[object, RegExp]> = [
      [{ top: [] }, /items\[0\]: 'logprob' \(a number\) and 'top' \(an array\) come together/],
      [{ logprob: -1 }, /come together/],
      [{ logprob: '-1', top: [] }, /come together/],
      [{ logprob: null, top: [] }, /come together/],
      [{ logprob: -1, top: {} }, /come together/],
      [{ logprob: -1, top: [3] }, /items\[0\]\.top\[0\] must be an object/],
      [
        { logprob: -1, top: [{ id: 1, text: 'b' }] },
        /items\[0\]\.top\[0\]: missing field 'logprob'/
      ],
      [
        {
          logprob: -1,
          top: [
            { id: 1, text: 'b', logprob: -1 },
            { id: 1.5, text: 'c', logprob: -2 }
          ]
        },
        /items\[0\]\.top\[1\]: field 'id' has an invalid value 1\.5/
      ],
      [{ logprob: -1, top: [{ id: 1, text: 2, logprob: -1 }] }, /top\[0\]: field 'text'/]
    ];
    for (const [extra, reason] of cases) {
      const result = parseMessage(batch(extra));
      expect(result, JSON.stringify(extra)).toMatchObject({ ok: false, kind: 'invalid' });
      if (!result.ok) {
        expect(result.reason, JSON.stringify(extra)).toMatch(reason);
      }
    }
    expect(parseMessage(batch({ logprob: 0, top: [] })).ok).toBe(true);
  });

  it('checks the optional config.chat of run.start like events.py', () => {
    const start = fixture('valid', 'run_start_chat.json') as { config: { [k: string]: unknown } };
    const parsed = parseMessage(start);
    expect(parsed.ok).toBe(true);
    if (parsed.ok && parsed.message.type === 'run.start') {
      const chat = chatOf(parsed.message.config);
      expect(chat?.template).toBe('chatml');
      expect(chat?.messages.map(t => t.role)).toEqual(['system', 'user', 'assistant', 'user']);
    }
    expect(chatOf({ max_new_tokens: 8 })).toBeNull(); // not a chat run
    expect(chatOf({ chat: { messages: 'x', template: 'plain' } })).toBeNull();
    const withChat = (chat: unknown) => ({ ...start, config: { chat } });
    const cases: Array<[unknown, RegExp]> = [
      [['user', 'Hi'], /^run\.start\.config\.chat must be an object/],
      [{ messages: [] }, /^run\.start\.config\.chat: missing field 'template'$/],
      [{ messages: [], template: 3 }, /chat: field 'template' has an invalid value 3/],
      [{ messages: {}, template: 'plain' }, /chat: field 'messages'/],
      [
        { messages: [{ role: 'user', content: 'a' }, 'b'], template: 'plain' },
        /run\.start\.config\.chat\.messages\[1\] must be an object/
      ],
      [
        { messages: [{ role: 'robot', content: 'a' }], template: 'plain' },
        /messages\[0\]: field 'role' has an invalid value "robot"/
      ],
      [
        { messages: [{ role: 'user' }], template: 'plain' },
        /messages\[0\]: missing field 'content'/
      ],
      [{ messages: [{ role: 'user', content: null }], template: 'plain' }, /field 'content'/]
    ];
    for (const [chat, reason] of cases) {
      const result = parseMessage(withChat(chat));
      expect(result, JSON.stringify(chat)).toMatchObject({ ok: false, kind: 'invalid' });
      if (!result.ok) {
        expect(result.reason, JSON.stringify(chat)).toMatch(reason);
      }
    }
    expect(parseMessage(withChat({ messages: [], template: 'custom' })).ok).toBe(true);
  });

  it('never throws, even on hostile input', () => {
    const cyclic: { [k: string]: unknown } = { v: 1, type: 'checkpoint', run: 'r', step: 'x' };
    cyclic['path'] = cyclic;
    for (const data of [undefined, 0, true, Symbol('x'), () => 1, cyclic, Object.create(null)]) {
      expect(() => parseMessage(data)).not.toThrow();
      expect(parseMessage(data).ok).toBe(false);
    }
  });
});
