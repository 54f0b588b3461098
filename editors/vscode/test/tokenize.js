#!/usr/bin/env node
// Tokenize .pipe files with the real TextMate engine VS Code uses (vscode-textmate on the
// vscode-oniguruma regex library) and syntaxes/pipe.tmLanguage.json.
//
//   node test/tokenize.js [--theme THEME.json] [--grammar GRAMMAR.json] FILE...
//
// Prints one JSON array on stdout, one entry per file:
//   {"path": FILE, "lines": [[{"start": 0, "end": 2, "text": "lm", "scopes": ["source.pipe", ...]}, ...], ...]}
// Lines are the file split on "\n"; start/end count code points (Python string indices), not UTF-16
// units. With --theme (a VS Code colour theme's JSON: {"settings": [{"scope": ..., "settings":
// {"foreground": ..., "fontStyle": ...}}]}), each token also gets the "color" and "fontStyle" the
// theme gives it, resolved by vscode-textmate's own theme matcher.
'use strict';

const fs = require('fs');
const path = require('path');
const vsctm = require('vscode-textmate');
const oniguruma = require('vscode-oniguruma');

const HERE = __dirname;
const DEFAULT_GRAMMAR = path.join(HERE, '..', 'syntaxes', 'pipe.tmLanguage.json');

function parseArgs(argv) {
  const args = { theme: null, grammar: DEFAULT_GRAMMAR, files: [] };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--theme') args.theme = argv[++i];
    else if (argv[i] === '--grammar') args.grammar = argv[++i];
    else args.files.push(argv[i]);
  }
  if (args.files.length === 0) {
    process.stderr.write('usage: node test/tokenize.js [--theme THEME.json] [--grammar GRAMMAR.json] FILE...\n');
    process.exit(2);
  }
  return args;
}

async function loadGrammar(grammarPath, themePath) {
  const wasm = fs.readFileSync(require.resolve('vscode-oniguruma/release/onig.wasm'));
  await oniguruma.loadWASM(wasm.buffer.slice(wasm.byteOffset, wasm.byteOffset + wasm.byteLength));
  const registry = new vsctm.Registry({
    onigLib: Promise.resolve({
      createOnigScanner: (sources) => new oniguruma.OnigScanner(sources),
      createOnigString: (s) => new oniguruma.OnigString(s),
    }),
    loadGrammar: async (scopeName) => {
      if (scopeName !== 'source.pipe') return null;
      const text = fs.readFileSync(grammarPath, 'utf8');
      return vsctm.parseRawGrammar(text, grammarPath);
    },
    theme: themePath ? JSON.parse(fs.readFileSync(themePath, 'utf8')) : undefined,
  });
  const grammar = await registry.loadGrammar('source.pipe');
  if (!grammar) throw new Error(`could not load the grammar ${grammarPath}`);
  return { registry, grammar };
}

// The code-point index of each UTF-16 index of `line` (length + 1 entries).
function codePointIndex(line) {
  const map = new Array(line.length + 1);
  let cp = 0;
  for (let i = 0; i < line.length; i++) {
    map[i] = cp;
    const c = line.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < line.length) {
      const d = line.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        map[i + 1] = cp;
        i++;
      }
    }
    cp++;
  }
  map[line.length] = cp;
  return map;
}

const FONT_STYLES = { 1: 'italic', 2: 'bold', 4: 'underline', 8: 'strikethrough' };

function tokenizeText(text, grammar, colorMap) {
  const lines = text.split('\n');
  let state = vsctm.INITIAL;
  const out = [];
  for (const line of lines) {
    const result = grammar.tokenizeLine(line, state);
    const binary = colorMap ? grammar.tokenizeLine2(line, state).tokens : null;
    const cps = codePointIndex(line);
    const tokens = [];
    let b = 0;
    for (const tok of result.tokens) {
      const start = Math.min(tok.startIndex, line.length);
      const end = Math.min(tok.endIndex, line.length);
      if (end <= start) continue;
      const entry = { start: cps[start], end: cps[end], text: line.slice(start, end), scopes: tok.scopes };
      if (binary) {
        // Binary tokens are (startIndex, metadata) pairs, merged where the metadata is equal.
        while (b + 2 < binary.length && binary[b + 2] <= start) b += 2;
        const meta = binary[b + 1];
        entry.color = colorMap[(meta & 0xff8000) >>> 15];
        const style = (meta & 0x7800) >>> 11;
        entry.fontStyle = Object.keys(FONT_STYLES).filter((bit) => style & bit).map((bit) => FONT_STYLES[bit]).join(' ');
      }
      tokens.push(entry);
    }
    out.push(tokens);
    state = result.ruleStack;
  }
  return out;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const { registry, grammar } = await loadGrammar(args.grammar, args.theme);
  const colorMap = args.theme ? registry.getColorMap() : null;
  const result = args.files.map((file) => ({
    path: file,
    lines: tokenizeText(fs.readFileSync(file, 'utf8'), grammar, colorMap),
  }));
  process.stdout.write(JSON.stringify(result));
  process.stdout.write('\n');
}

main().catch((err) => {
  process.stderr.write(`tokenize.js: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
