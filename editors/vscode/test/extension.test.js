// Unit tests of extension.js, run by tests/test_grammar.py (or `npm test` here). VS Code is not
// available outside the editor, so the `vscode` module and vscode-languageclient's LanguageClient are
// stand-ins that record what the extension asks of them: which executable it starts with which
// arguments, for which documents, what the user is told when the executable is missing, and that
// deactivate stops the server.
'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const Module = require('node:module');
const os = require('node:os');
const path = require('node:path');
const test = require('node:test');

// ----------------------------------------------------------------------------- stand-ins
const state = {
  settings: {},
  folders: [],
  errors: [],
  errorChoice: undefined,
  commands: [],
  clients: [],
  configListeners: [],
  startError: null,
};

const fakeVscode = {
  workspace: {
    get workspaceFolders() {
      return state.folders.map((p) => ({ uri: { fsPath: p } }));
    },
    getConfiguration(section) {
      return { get: (key) => state.settings[`${section}.${key}`] };
    },
    createFileSystemWatcher(glob) {
      return { glob, dispose() {} };
    },
    onDidChangeConfiguration(listener) {
      state.configListeners.push(listener);
      return { dispose() {} };
    },
  },
  window: {
    async showErrorMessage(message, ...items) {
      state.errors.push({ message, items });
      return state.errorChoice;
    },
  },
  commands: {
    async executeCommand(...args) {
      state.commands.push(args);
    },
  },
};

class FakeLanguageClient {
  constructor(id, name, serverOptions, clientOptions) {
    Object.assign(this, { id, name, serverOptions, clientOptions, started: false, stopped: false });
    state.clients.push(this);
  }
  async start() {
    if (state.startError) throw state.startError;
    this.started = true;
  }
  async stop() {
    this.stopped = true;
  }
}

const realLoad = Module._load;
Module._load = function load(request, parent, isMain) {
  if (request === 'vscode') return fakeVscode;
  if (request === 'vscode-languageclient/node') return { LanguageClient: FakeLanguageClient };
  return realLoad.call(this, request, parent, isMain);
};

const EXTENSION = path.join(__dirname, '..', 'extension.js');

function freshExtension() {
  delete require.cache[require.resolve(EXTENSION)];
  return require(EXTENSION);
}

function reset(settings) {
  Object.assign(state, {
    settings, folders: [], errors: [], errorChoice: undefined, commands: [], clients: [],
    configListeners: [], startError: null,
  });
}

function context() {
  return { subscriptions: [] };
}

const tempDirs = [];
process.on('exit', () => {
  for (const dir of tempDirs) fs.rmSync(dir, { recursive: true, force: true });
});

// A directory with an executable `pipec` (a shell script: never run here, only found).
function fakeInstall() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pipec-ext-test-'));
  tempDirs.push(dir);
  const bin = path.join(dir, 'bin');
  fs.mkdirSync(bin);
  const exe = path.join(bin, 'pipec');
  fs.writeFileSync(exe, '#!/bin/sh\nexit 0\n', { mode: 0o755 });
  fs.writeFileSync(path.join(bin, 'not-executable'), 'data\n', { mode: 0o644 });
  return { dir, bin, exe };
}

// ----------------------------------------------------------------------------- tests
test('starts `pipec lsp` over stdio for pipe documents, and stops it on deactivate', async () => {
  const { exe } = fakeInstall();
  reset({ 'pipec.path': exe });
  const ext = freshExtension();
  await ext.activate(context());
  assert.equal(state.errors.length, 0, JSON.stringify(state.errors));
  assert.equal(state.clients.length, 1);
  const client = state.clients[0];
  assert.equal(client.started, true);
  assert.equal(client.serverOptions.command, exe);
  assert.deepEqual(client.serverOptions.args, ['lsp']);
  // With a `transport`, vscode-languageclient would append `--stdio` to the arguments.
  assert.equal(client.serverOptions.transport, undefined);
  const languages = client.clientOptions.documentSelector.map((s) => s.language);
  assert.deepEqual([...new Set(languages)], ['pipe']);
  assert.ok(client.clientOptions.documentSelector.some((s) => s.scheme === 'file'));
  await ext.deactivate();
  assert.equal(client.stopped, true);
});

test('the default `pipec` is looked up on PATH', async () => {
  const { bin, exe } = fakeInstall();
  const oldPath = process.env.PATH;
  process.env.PATH = [bin, oldPath].join(path.delimiter);
  try {
    reset({});
    const ext = freshExtension();
    await ext.activate(context());
    assert.equal(state.clients.length, 1);
    assert.equal(state.clients[0].serverOptions.command, exe);
    await ext.deactivate();
  } finally {
    process.env.PATH = oldPath;
  }
});

test('a relative pipec.path is taken from the workspace folder', async () => {
  const { dir, exe } = fakeInstall();
  reset({ 'pipec.path': 'bin/pipec' });
  state.folders = [dir];
  const ext = freshExtension();
  await ext.activate(context());
  assert.equal(state.clients[0].serverOptions.command, exe);
  assert.equal(state.clients[0].serverOptions.options.cwd, dir);
  await ext.deactivate();
});

test('a missing executable gets a clear error with a way to the setting, and no client', async () => {
  reset({ 'pipec.path': 'pipec-that-does-not-exist-4821' });
  state.errorChoice = 'Open Settings';
  const ext = freshExtension();
  await ext.activate(context());
  assert.equal(state.clients.length, 0);
  assert.equal(state.errors.length, 1);
  const { message, items } = state.errors[0];
  assert.match(message, /"pipec-that-does-not-exist-4821" was not found on PATH/);
  assert.match(message, /pipec\.path/);
  assert.deepEqual(items, ['Open Settings']);
  assert.deepEqual(state.commands, [['workbench.action.openSettings', 'pipec.path']]);
  await ext.deactivate();
});

test('a file that is not executable is not taken for pipec', async () => {
  const { bin } = fakeInstall();
  reset({ 'pipec.path': path.join(bin, 'not-executable') });
  const ext = freshExtension();
  await ext.activate(context());
  assert.equal(state.clients.length, 0);
  assert.match(state.errors[0].message, /not-executable" was not found\./);
});

test('a server that fails to start is reported', async () => {
  const { exe } = fakeInstall();
  reset({ 'pipec.path': exe });
  state.startError = new Error('Pending response rejected since connection got disposed');
  const ext = freshExtension();
  await ext.activate(context());
  assert.equal(state.errors.length, 1);
  assert.match(state.errors[0].message, /lsp" failed to start: Pending response rejected/);
  await ext.deactivate();
});

test('changing pipec.path restarts the server with the new executable', async () => {
  const first = fakeInstall();
  const second = fakeInstall();
  reset({ 'pipec.path': first.exe });
  const ctx = context();
  const ext = freshExtension();
  await ext.activate(ctx);
  assert.equal(ctx.subscriptions.length, 1);
  state.settings['pipec.path'] = second.exe;
  for (const listener of state.configListeners) {
    listener({ affectsConfiguration: (key) => key === 'pipec.path' });
  }
  await ext.deactivate();
  assert.equal(state.clients.length, 2);
  assert.equal(state.clients[0].stopped, true);
  assert.equal(state.clients[1].serverOptions.command, second.exe);
  assert.equal(state.clients[1].started, true);
  assert.equal(state.clients[1].stopped, true);
  // Other settings changing leaves the server alone.
  for (const listener of state.configListeners) {
    listener({ affectsConfiguration: (key) => key === 'editor.fontSize' });
  }
  assert.equal(state.clients.length, 2);
});
