// The JupyterLab extension template's lint set (flat config): eslint + typescript-eslint's
// recommended rules and the template's conventions (interfaces here are named without the
// template's `I` prefix, as the protocol and store types always were). `jlpm lint:check`
// runs it with prettier --check and stylelint; `make lint` runs that.
import js from '@eslint/js';
import prettierConfig from 'eslint-config-prettier/flat';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  {
    ignores: ['node_modules', 'lib', 'aigc_lab/labextension', '.venv*', '**/*.js', '**/*.d.ts']
  },
  js.configs.recommended,
  tseslint.configs.recommended,
  {
    files: ['**/*.ts', '**/*.mts'],
    languageOptions: {
      globals: { ...globals.browser, ...globals.es2020, ...globals.node },
      parserOptions: { sourceType: 'module' }
    },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { args: 'none' }],
      // strict TypeScript: no `any` (the protocol is typed end to end)
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-namespace': 'off',
      '@typescript-eslint/no-use-before-define': 'off',
      curly: ['error', 'all'],
      eqeqeq: 'error',
      'prefer-arrow-callback': 'error'
    }
  },
  // formatting is prettier's job (`jlpm prettier:check`): the rules it would fight are off
  prettierConfig
);
