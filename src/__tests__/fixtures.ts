/**
 * The shared protocol fixtures (tests/fixtures/protocol/{valid,invalid}/*.json), read from disk at
 * test time so new fixtures are picked up without touching the tests.
 */

import { readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

import { parseMessage } from '../protocol';
import { Action } from '../store';

export const FIXTURE_ROOT = resolve(__dirname, '..', '..', 'tests', 'fixtures', 'protocol');

export interface Fixture {
  name: string;
  data: unknown;
}

export function loadFixtures(kind: 'valid' | 'invalid'): Fixture[] {
  const dir = join(FIXTURE_ROOT, kind);
  return readdirSync(dir)
    .filter(f => f.endsWith('.json'))
    .sort()
    .map(name => ({ name, data: JSON.parse(readFileSync(join(dir, name), 'utf8')) as unknown }));
}

export function fixture(kind: 'valid' | 'invalid', name: string): unknown {
  const found = loadFixtures(kind).find(f => f.name === name);
  if (found === undefined) {
    throw new Error(`no fixture ${kind}/${name}`);
  }
  return found.data;
}

/** A valid kernel → panel fixture as a store action. */
export function fixtureAction(name: string): Action {
  const result = parseMessage(fixture('valid', name));
  if (!result.ok || result.message.type === 'cancel' || result.message.type === 'history') {
    throw new Error(`fixture ${name} is not a kernel → panel message`);
  }
  return { type: 'message', message: result.message };
}
