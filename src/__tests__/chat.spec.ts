// @vitest-environment jsdom
import { describe, expect, it } from 'vitest';

import { ChatTurn, RunStartMessage } from '../protocol';
import { Action, initialState, reduce, reduceAll } from '../store';
import { CHAT_VISIBLE_TURNS, RunView } from '../views/runview';
import { fixtureAction } from './fixtures';

const fx = fixtureAction;

/** The valid chat fixture's run.start with `messages` as its turns (and `template`). */
function chatStart(messages: ChatTurn[], template = 'llama-3'): Action {
  const start = fx('run_start_chat.json');
  if (start.type !== 'message' || start.message.type !== 'run.start') {
    throw new Error('run_start_chat.json is not a run.start');
  }
  const message: RunStartMessage = {
    ...start.message,
    config: { ...start.message.config, chat: { messages, template } }
  };
  return { type: 'message', message };
}

function turns(n: number): ChatTurn[] {
  const out: ChatTurn[] = [{ role: 'system', content: 'Be brief.' }];
  for (let k = 1; k < n; k++) {
    out.push({ role: k % 2 === 1 ? 'user' : 'assistant', content: `turn ${k}` });
  }
  return out;
}

const shownTurns = (view: RunView) =>
  Array.from(view.node.querySelectorAll<HTMLElement>('ol.aigc-chat-turns > li.aigc-chat-turn'));

describe('chat runs in the run card', () => {
  it("shows the conversation's turns, role by role, above the reply labelled as the assistant's", () => {
    const view = new RunView('gen-chat1', () => undefined);
    const s = reduceAll(initialState(), [
      fx('run_start_chat.json'),
      {
        type: 'message',
        message: {
          v: 1,
          type: 'tokens',
          run: 'gen-chat1',
          items: [{ i: 0, id: 7, text: '$12', ms: 9 }]
        }
      }
    ]);
    view.update(s.runs['gen-chat1']);
    const chat = view.node.querySelector('section.aigc-chat') as HTMLElement;
    expect(chat.hidden).toBe(false);
    expect(chat.getAttribute('data-template')).toBe('chatml');
    expect(chat.getAttribute('data-turn-count')).toBe('4');
    expect(chat.querySelector('.aigc-chat-template')?.textContent).toBe('template: chatml');
    // Labelled list semantics: a section named by its title, an ordered list of turns.
    const title = chat.querySelector(`#${chat.getAttribute('aria-labelledby') ?? 'none'}`);
    expect(title?.textContent).toBe('Conversation');
    const list = chat.querySelector('ol.aigc-chat-turns') as HTMLElement;
    expect(list.getAttribute('aria-label')).toBe('Conversation turns');
    const items = shownTurns(view);
    expect(items.map(li => li.getAttribute('data-role'))).toEqual([
      'system',
      'user',
      'assistant',
      'user'
    ]);
    expect(items.map(li => li.querySelector('.aigc-chat-role')?.textContent)).toEqual([
      'System',
      'User',
      'Assistant',
      'User'
    ]);
    expect(items.map(li => li.querySelector('.aigc-chat-content')?.textContent)).toEqual([
      'Be brief.',
      'What colour is the lamp?',
      'blue',
      'How much is it?'
    ]);
    expect(items.map(li => li.getAttribute('aria-posinset'))).toEqual(['1', '2', '3', '4']);
    expect(items.every(li => li.getAttribute('aria-setsize') === '4')).toBe(true);
    expect((chat.querySelector('.aigc-chat-earlier') as HTMLElement).hidden).toBe(true);
    // The streamed reply is the assistant's turn, after the turns.
    const text = view.node.querySelector('.aigc-run-text') as HTMLElement;
    const label = view.node.querySelector('.aigc-chat-reply-role') as HTMLElement;
    expect(label.hidden).toBe(false);
    expect(label.textContent).toBe('Assistant · reply');
    expect(text.getAttribute('aria-labelledby')).toBe(label.id);
    expect(text.getAttribute('role')).toBe('group');
    expect(text.getAttribute('data-role')).toBe('assistant');
    expect(text.textContent).toBe('$12');
    const order = Array.from(view.node.children);
    expect(order.indexOf(chat)).toBeLessThan(order.indexOf(label));
    expect(order.indexOf(label)).toBe(order.indexOf(text) - 1);
  });

  it('shows nothing of the kind for a run that is not a chat', () => {
    const view = new RunView('gen-7f3a', () => undefined);
    view.update(reduce(initialState(), fx('run_start_generate.json')).runs['gen-7f3a']);
    expect((view.node.querySelector('section.aigc-chat') as HTMLElement).hidden).toBe(true);
    expect((view.node.querySelector('.aigc-chat-reply-role') as HTMLElement).hidden).toBe(true);
    expect(shownTurns(view).length).toBe(0);
    const text = view.node.querySelector('.aigc-run-text') as HTMLElement;
    expect(text.hasAttribute('aria-labelledby') || text.hasAttribute('role')).toBe(false);
  });

  it('keeps a long history bounded: the last turns, a note of the earlier ones, all on expand', () => {
    const n = 25;
    const view = new RunView('gen-chat1', () => undefined);
    const run = reduce(initialState(), chatStart(turns(n))).runs['gen-chat1'];
    view.update(run);
    const chat = view.node.querySelector('section.aigc-chat') as HTMLElement;
    expect(chat.getAttribute('data-template')).toBe('llama-3');
    let items = shownTurns(view);
    expect(items.length).toBe(CHAT_VISIBLE_TURNS);
    expect(chat.getAttribute('data-shown-turns')).toBe(String(CHAT_VISIBLE_TURNS));
    // The last turns, in order, numbered within the whole conversation.
    expect(items.map(li => li.getAttribute('data-turn'))).toEqual(
      Array.from({ length: CHAT_VISIBLE_TURNS }, (_, k) => String(n - CHAT_VISIBLE_TURNS + k))
    );
    expect(items[0].getAttribute('aria-posinset')).toBe(String(n - CHAT_VISIBLE_TURNS + 1));
    expect(items[0].getAttribute('aria-setsize')).toBe(String(n));
    const earlier = chat.querySelector('.aigc-chat-earlier') as HTMLElement;
    expect(earlier.hidden).toBe(false);
    const k = n - CHAT_VISIBLE_TURNS;
    expect(earlier.querySelector('.aigc-chat-earlier-note')?.textContent).toBe(
      `${k} earlier turns not shown`
    );
    const expand = earlier.querySelector('button.aigc-chat-expand') as HTMLButtonElement;
    expect(expand.getAttribute('aria-expanded')).toBe('false');
    expect(expand.getAttribute('aria-controls')).toBe(chat.querySelector('ol.aigc-chat-turns')?.id);
    expect(expand.textContent).toBe(`Show ${k} earlier turns`);
    expand.click();
    items = shownTurns(view);
    expect(items.length).toBe(n);
    expect(items[0].getAttribute('data-role')).toBe('system');
    expect(expand.getAttribute('aria-expanded')).toBe('true');
    expect(earlier.querySelector('.aigc-chat-earlier-note')?.textContent).toBe(
      `showing all ${n} turns`
    );
    // Header updates (tokens streaming in) leave the expanded turns as they are.
    view.update({ ...run, dups: 1 });
    expect(shownTurns(view).length).toBe(n);
    expand.click();
    expect(shownTurns(view).length).toBe(CHAT_VISIBLE_TURNS);
    expect(expand.getAttribute('aria-expanded')).toBe('false');
  });

  it('has no note with at most the visible number of turns; one earlier turn is singular', () => {
    const view = new RunView('gen-chat1', () => undefined);
    view.update(reduce(initialState(), chatStart(turns(CHAT_VISIBLE_TURNS))).runs['gen-chat1']);
    expect(shownTurns(view).length).toBe(CHAT_VISIBLE_TURNS);
    expect((view.node.querySelector('.aigc-chat-earlier') as HTMLElement).hidden).toBe(true);
    const more = new RunView('gen-chat1', () => undefined);
    more.update(reduce(initialState(), chatStart(turns(CHAT_VISIBLE_TURNS + 1))).runs['gen-chat1']);
    expect(more.node.querySelector('.aigc-chat-earlier-note')?.textContent).toBe(
      '1 earlier turn not shown'
    );
  });

  it('labels tool turns as such', () => {
    const view = new RunView('gen-chat1', () => undefined);
    const conv: ChatTurn[] = [
      { role: 'user', content: 'weather?' },
      { role: 'assistant', content: 'calling' },
      { role: 'tool', content: '{"t": 21}' },
      { role: 'user', content: 'so?' }
    ];
    view.update(reduce(initialState(), chatStart(conv, 'custom')).runs['gen-chat1']);
    const tool = shownTurns(view)[2];
    expect(tool.getAttribute('data-role')).toBe('tool');
    expect(tool.querySelector('.aigc-chat-role')?.textContent).toBe('Tool');
    expect(view.node.querySelector('.aigc-chat-template')?.textContent).toBe('template: custom');
  });
});

describe("the run card's train line", () => {
  it("shows the last eval's generative metrics", () => {
    const view = new RunView('train-01', () => undefined);
    const s = reduceAll(initialState(), [
      fx('run_start_train.json'),
      fx('train_step.json'),
      fx('train_eval.json'),
      {
        type: 'message',
        message: {
          v: 1,
          type: 'train.eval',
          run: 'train-01',
          step: 100,
          val_loss: 2.5,
          ppl: 12.18,
          metrics: { exact_match: 0.5, chrf: 45.234, bleu: 12 }
        }
      }
    ]);
    view.update(s.runs['train-01']);
    const line = view.node.querySelector('.aigc-train-summary')?.textContent ?? '';
    expect(line).toContain(
      'val_loss 2.5000 · ppl 12.18 · exact_match 0.500 · chrf 45.2 · bleu 12.0'
    );
    expect(line).not.toContain('accuracy'); // the earlier eval's metrics are not the last one's
  });
});
