/**
 * A kernel connection with just what `KernelChannel` touches (comm targets, comm info, status
 * signals), for panel tests that run without a server; and `frame()`, one animation frame.
 */

import { Kernel } from '@jupyterlab/services';
import { Signal } from '@lumino/signaling';
import { vi } from 'vitest';

export function fakeKernel(id = 'k-123'): Kernel.IKernelConnection {
  const k = {
    id,
    isDisposed: false,
    registerCommTarget: vi.fn(),
    removeCommTarget: vi.fn(),
    requestCommInfo: () => Promise.resolve({ content: { status: 'ok', comms: {} } }),
    hasComm: () => false,
    statusChanged: new Signal<object, string>({}),
    connectionStatusChanged: new Signal<object, string>({}),
    disposed: new Signal<object, void>({})
  };
  return k as unknown as Kernel.IKernelConnection;
}

export const frame = (): Promise<unknown> =>
  new Promise(r => requestAnimationFrame(() => r(undefined)));
