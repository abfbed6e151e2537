import { transformSync } from 'esbuild';

/**
 * Turns a transformation's source (JavaScript or TypeScript, ES module or CommonJS) into
 * CommonJS the sandbox can run. Types are stripped, nothing is bundled: an `import` of
 * another module fails when the function loads, as the sandbox has no `require`.
 *
 * @throws Error with esbuild's message when the source does not parse.
 */
export function compileFunction(source: string, filename: string): string {
  const ts = /\.(c|m)?tsx?$/.test(filename);
  return transformSync(source, {
    loader: ts ? 'ts' : 'js',
    format: 'cjs',
    target: 'node20',
    sourcefile: filename,
    logLevel: 'silent',
  }).code;
}
