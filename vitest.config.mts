import { defineConfig } from 'vitest/config';

// Unit tests of the pure modules (protocol, store, formatting) run in Node; DOM tests opt into
// jsdom with a `// @vitest-environment jsdom` comment at their top.
export default defineConfig({
  test: {
    include: ['src/__tests__/**/*.spec.ts'],
    environment: 'node',
    setupFiles: ['src/__tests__/setup.ts'],
    watch: false,
    reporters: ['default']
  }
});
