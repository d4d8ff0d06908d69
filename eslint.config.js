import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  // dist/: each package's build output (npm run build), not sources.
  { ignores: ['**/node_modules/**', '**/dist/**', 'docs/**', '**/*.d.ts'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { parserOptions: { projectService: false } },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
      'no-console': ['error', { allow: ['warn', 'error'] }],
      eqeqeq: ['error', 'always'],
    },
  },
  {
    files: ['bench/**', '**/example/**', '**/*.test.ts', 'packages/testkit/**'],
    rules: { 'no-console': 'off' },
  },
  {
    // The lockstep bin is plain JavaScript run by Node.
    files: ['packages/cli/bin/*.js'],
    languageOptions: { globals: { process: 'readonly', setTimeout: 'readonly' } },
  },
  {
    // Page scripts run in the browser: the shop's and the dashboard's.
    files: ['examples/*/public/**/*.js', 'packages/monitor/dashboard/**/*.js'],
    languageOptions: { globals: { document: 'readonly', fetch: 'readonly', window: 'readonly', Node: 'readonly', URLSearchParams: 'readonly', FormData: 'readonly', setInterval: 'readonly' } },
  },
);
