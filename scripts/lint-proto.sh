#!/usr/bin/env bash
# Lints proto/ with buf (npm's @bufbuild/buf, pinned), configured in buf.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=target/buf
if [ ! -x "$dir/node_modules/.bin/buf" ]; then
    mkdir -p "$dir"
    npm install --prefix "$dir" --silent --no-audit --no-fund @bufbuild/buf@1.75.0 >/dev/null
fi
"$dir/node_modules/.bin/buf" lint
echo "proto lint clean"
