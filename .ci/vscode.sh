#!/usr/bin/env bash
# Package the VS Code extension (editors/vscode) as dist/pipec-<version>.vsix with the official
# packaging tool, @vscode/vsce, pinned in editors/vscode/package.json and installed from the npm
# registry by `npm ci` (package-lock.json). Then check the package: the manifest, the grammar and
# extension.js are in it, and extension.js loads with the dependencies packaged beside it.
# Needs Node.js >= 20 (what @vscode/vsce 3 requires) and npm.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd)"
EXT="$REPO/editors/vscode"

command -v node >/dev/null 2>&1 || { echo "vscode.sh: node is not installed (Node.js >= 20 and npm are needed)" >&2; exit 1; }
command -v npm >/dev/null 2>&1 || { echo "vscode.sh: npm is not installed" >&2; exit 1; }
NODE_MAJOR="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$NODE_MAJOR" -lt 20 ]; then
    echo "vscode.sh: node $(node --version) is too old: @vscode/vsce needs Node.js >= 20" >&2
    exit 1
fi

VERSION="$(node -p "require('$EXT/package.json').version")"
PY_VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$REPO/pyproject.toml" | head -n1)"
if [ "$VERSION" != "$PY_VERSION" ]; then
    echo "vscode.sh: editors/vscode/package.json has version $VERSION, pyproject.toml $PY_VERSION" >&2
    exit 1
fi
VSIX="$REPO/dist/pipec-$VERSION.vsix"
mkdir -p "$REPO/dist"
rm -f "$VSIX"

cd "$EXT"
# --ignore-scripts: nothing runs at install time (vsce's optional signing helper has a postinstall
# that packaging does not need).
npm ci --no-audit --no-fund --ignore-scripts
npx --no-install vsce package --no-rewrite-relative-links --out "$VSIX"

# What went in: a .vsix is a zip; unpack it and look.
CHECK="$(mktemp -d)"
trap 'rm -rf "$CHECK"' EXIT
python3 - "$VSIX" "$CHECK" <<'PY'
import json, sys, zipfile
vsix, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(vsix) as z:
    names = set(z.namelist())
    z.extractall(dest)
need = ["extension/package.json", "extension/extension.js", "extension/syntaxes/pipe.tmLanguage.json",
        "extension/language-configuration.json", "extension/readme.md", "extension/LICENSE.txt",
        "extension/screenshot.png", "extension/node_modules/vscode-languageclient/package.json"]
missing = [n for n in need if n not in names]
unwanted = [n for n in names if n.startswith(("extension/test/", "extension/node_modules/@vscode/vsce/",
                                             "extension/node_modules/vscode-textmate/",
                                             "extension/node_modules/vscode-oniguruma/"))
            or n.endswith(("make_screenshot.py", ".vsix"))]
if missing or unwanted:
    sys.exit(f"vscode.sh: {vsix}: missing {missing}, should not contain {unwanted[:10]}")
manifest = json.loads(open(f"{dest}/extension/package.json", encoding="utf-8").read())
grammar = json.loads(open(f"{dest}/extension/syntaxes/pipe.tmLanguage.json", encoding="utf-8").read())
assert manifest["contributes"]["grammars"][0]["scopeName"] == grammar["scopeName"] == "source.pipe"
print(f"vscode.sh: {vsix}: {len(names)} files, manifest, grammar and extension.js present")
PY
# extension.js must load with only what was packaged. VS Code provides the `vscode` module; here any
# name of it is an empty class, enough for vscode-languageclient to load.
node -e '
const Module = require("module");
const load = Module._load;
const vscode = new Proxy({}, { get: (target, name) => (target[name] ??= class {}) });
Module._load = function (request, parent, isMain) {
  if (request === "vscode") return vscode;
  return load.call(this, request, parent, isMain);
};
const ext = require(process.argv[1]);
if (typeof ext.activate !== "function" || typeof ext.deactivate !== "function") {
  console.error("vscode.sh: extension.js does not export activate and deactivate");
  process.exit(1);
}
' "$CHECK/extension/extension.js"
ls -l "$VSIX"
