// Bundles the dashboard for embedding in strata-collector: app.js (with
// uPlot) and style.css (with uPlot's stylesheet) become content-hashed files
// under OUT/assets, and OUT/index.html refers to them by those names, so the
// collector can let browsers cache them for good. Run by the collector's
// build (cmake/web_assets.cmake) after `npm ci` in the build directory:
//
//   node build.mjs --npm-dir BUILD/collector/web --out BUILD/collector/web/dist

import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ENTRIES = ['app.js', 'style.css'];

function parseArgs(argv) {
  const opts = {};
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith('--') || argv[i + 1] === undefined) {
      throw new Error(`usage: node build.mjs --npm-dir DIR --out DIR (at '${argv[i]}')`);
    }
    opts[argv[i].slice(2)] = path.resolve(argv[i + 1]);
  }
  if (!opts['npm-dir'] || !opts.out) {
    throw new Error('usage: node build.mjs --npm-dir DIR --out DIR');
  }
  return opts;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const src = path.dirname(fileURLToPath(import.meta.url));
  const modules = path.join(opts['npm-dir'], 'node_modules');
  const require = createRequire(path.join(opts['npm-dir'], 'build.cjs'));
  const esbuild = require('esbuild');
  const assets = path.join(opts.out, 'assets');

  const uplot = JSON.parse(fs.readFileSync(path.join(modules, 'uplot', 'package.json'), 'utf8'));

  fs.rmSync(opts.out, { recursive: true, force: true });
  const result = await esbuild.build({
    absWorkingDir: src,
    entryPoints: ENTRIES,
    bundle: true,
    minify: true,
    format: 'esm',
    target: 'es2020',
    outdir: assets,
    entryNames: '[name]-[hash]',
    nodePaths: [modules],
    metafile: true,
    charset: 'utf8',
    legalComments: 'eof',
    banner: {
      js: `/*! Strata dashboard; includes uPlot ${uplot.version} (MIT) (c) Leon Sorokin, https://github.com/leeoniya/uPlot */`,
      css: `/*! Strata dashboard; includes uPlot ${uplot.version} styles (MIT) */`,
    },
    logLevel: 'warning',
  });

  // Entry point -> its hashed file name.
  const names = new Map();
  for (const [out, meta] of Object.entries(result.metafile.outputs)) {
    if (meta.entryPoint) {
      names.set(path.basename(meta.entryPoint), path.basename(out));
    }
  }
  let html = fs.readFileSync(path.join(src, 'index.html'), 'utf8');
  for (const entry of ENTRIES) {
    const ref = `/assets/${entry}`;
    if (!names.has(entry) || html.split(`"${ref}"`).length !== 2) {
      throw new Error(`index.html must refer to "${ref}" exactly once`);
    }
    html = html.replace(`"${ref}"`, `"/assets/${names.get(entry)}"`);
  }
  fs.writeFileSync(path.join(opts.out, 'index.html'), html);
  for (const [entry, name] of names) {
    const size = fs.statSync(path.join(assets, name)).size;
    console.log(`dashboard: ${entry} -> assets/${name} (${size} bytes)`);
  }
}

main().catch((e) => {
  console.error(`dashboard build failed: ${e.message}`);
  process.exit(1);
});
