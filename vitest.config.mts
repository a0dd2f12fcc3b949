import { defineConfig } from 'vitest/config';

// Unit tests of the pure modules (protocol, store, formatting) run in Node; DOM tests opt into
// jsdom with a `// @vitest-environment jsdom` comment at their top.
export default defineConfig({
  test: {
    include: ['src/__tests__/**/*.spec.ts'],
    environment: 'node',
    setupFiles: ['src/__tests__/setup.ts'],
    // @jupyter/web-components (under @jupyterlab/ui-components: toolbar, icons) ships ESM with
    // extensionless imports that Node cannot resolve: let Vite resolve and transform it
    server: { deps: { inline: [/@jupyter\/web-components/] } },
    watch: false,
    reporters: ['default']
  }
});
