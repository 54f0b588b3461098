// The pipec extension: .pipe highlighting comes from the TextMate grammar in package.json; this file
// starts the language server, `pipec lsp` over stdio, for diagnostics as you type. The executable is
// the `pipec.path` setting (default `pipec`, looked up on PATH); when it cannot be found the user is
// told so plainly, with a button to the setting, instead of a silent retry loop.
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const vscode = require('vscode');
const { LanguageClient } = require('vscode-languageclient/node');

const SETTING = 'pipec.path';
let client = null;
let starting = Promise.resolve();

// The directory a relative `pipec.path` (e.g. `.venv/bin/pipec`) is resolved against.
function workspaceRoot() {
  const folders = vscode.workspace.workspaceFolders;
  return folders && folders.length > 0 ? folders[0].uri.fsPath : undefined;
}

function isExecutableFile(file) {
  try {
    if (!fs.statSync(file).isFile()) return false;
    if (process.platform !== 'win32') fs.accessSync(file, fs.constants.X_OK);
    return true;
  } catch (_) {
    return false;
  }
}

// The absolute path of the executable `command` names, or null. A bare name is looked up on PATH
// (with PATHEXT on Windows); a path may start with `~` or `${workspaceFolder}` and, if relative, is
// taken from the first workspace folder.
function resolveExecutable(command, env = process.env, root = workspaceRoot()) {
  if (!command || !command.trim()) return null;
  let cmd = command.trim();
  if (root) cmd = cmd.split('${workspaceFolder}').join(root);
  if (cmd === '~' || cmd.startsWith('~/')) cmd = path.join(os.homedir(), cmd.slice(1));
  const exts = process.platform === 'win32'
    ? [''].concat((env.PATHEXT || '.COM;.EXE;.BAT;.CMD').split(';').filter(Boolean))
    : [''];
  const hasDir = cmd.includes('/') || (process.platform === 'win32' && cmd.includes('\\'));
  const bases = [];
  if (hasDir) {
    bases.push(path.isAbsolute(cmd) ? cmd : path.resolve(root || process.cwd(), cmd));
  } else {
    for (const dir of (env.PATH || '').split(path.delimiter)) {
      if (dir) bases.push(path.join(dir, cmd));
    }
  }
  for (const base of bases) {
    for (const ext of exts) {
      if (isExecutableFile(base + ext)) return base + ext;
    }
  }
  return null;
}

async function offerSettings(message) {
  const choice = await vscode.window.showErrorMessage(message, 'Open Settings');
  if (choice === 'Open Settings') {
    await vscode.commands.executeCommand('workbench.action.openSettings', SETTING);
  }
}

async function startClient(context) {
  const configured = vscode.workspace.getConfiguration('pipec').get('path') || 'pipec';
  const executable = resolveExecutable(configured);
  if (!executable) {
    await offerSettings(
      `pipec: the language server cannot start: the executable "${configured}" was not found` +
      `${configured.includes('/') || configured.includes('\\') ? '' : ' on PATH'}. ` +
      'Install pipec with its lsp extra (pip install "pipec[lsp]") where VS Code can find it, or set ' +
      '"pipec.path" to its full path ' +
      '(e.g. /path/to/project/.venv/bin/pipec). Highlighting works without it.');
    return;
  }
  const serverOptions = {
    // No `transport`: the client would append `--stdio`; `pipec lsp` speaks LSP on stdin/stdout.
    command: executable,
    args: ['lsp'],
    options: { cwd: workspaceRoot() },
  };
  const clientOptions = {
    documentSelector: [
      { scheme: 'file', language: 'pipe' },
      { scheme: 'untitled', language: 'pipe' },
    ],
    synchronize: { fileEvents: vscode.workspace.createFileSystemWatcher('**/*.pipe') },
  };
  const created = new LanguageClient('pipec', 'pipec language server', serverOptions, clientOptions);
  client = created;
  try {
    await created.start();
  } catch (err) {
    if (client === created) client = null;
    await offerSettings(
      `pipec: "${executable} lsp" failed to start: ${err && err.message ? err.message : err}. ` +
      'It needs a pipec with the lsp command and its extra (pip install "pipec[lsp]"); the output ' +
      '"pipec language server" shows what it said. Or point "pipec.path" at another pipec.');
  }
}

async function stopClient() {
  const current = client;
  client = null;
  if (current) {
    try {
      await current.stop();
    } catch (_) {
      // A server that never started, or already exited, has nothing to stop.
    }
  }
}

function activate(context) {
  context.subscriptions.push(vscode.workspace.onDidChangeConfiguration((event) => {
    if (event.affectsConfiguration(SETTING)) {
      starting = starting.then(stopClient).then(() => startClient(context)).catch(logUnexpected);
    }
  }));
  starting = startClient(context).catch(logUnexpected);
  return starting;
}

function logUnexpected(err) {
  console.error('pipec extension:', err);
}

function deactivate() {
  return starting.then(stopClient);
}

module.exports = { activate, deactivate, resolveExecutable };
