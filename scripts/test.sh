#!/usr/bin/env bash
# The whole test suite, as the README and CI run it:
#   unit tests, the event-log conformance suite on SQLite and on a real
#   nats-server, and the end-to-end tests (real nats-server, real PostgreSQL,
#   one process per service, and the embedded all-in-one), and the official
#   openai Python package against the gateway (in a venv under target/).
#
# Then the web console: its unit tests (Vitest) and its browser tests
# (Playwright driving Debian's Chromium against the real `promptops` binary).
#
# Tests start their own servers on free ports; nothing needs to be running.
# What a fresh Debian machine lacks (nats-server, PostgreSQL) is installed
# when running as root, otherwise the command to install it is printed.
set -euo pipefail
cd "$(dirname "$0")/.."

have() {
    command -v "$1" >/dev/null 2>&1 && return 0
    for dir in /usr/sbin /usr/lib/postgresql/*/bin; do
        [ -x "$dir/$1" ] && return 0
    done
    return 1
}

missing=()
have nats-server || missing+=(nats-server)
have initdb || missing+=(postgresql)
have psql || missing+=(postgresql-client)
# The venv for the openai package (below) needs python3's venv module.
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
# The console is built with Node 20 and npm; its browser tests drive Chromium.
have npm || missing+=(nodejs npm)
have chromium || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing ${missing[*]}" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "missing: ${missing[*]} — install with: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
fi

# The e2e test of the OpenAI-compatible API drives the official `openai`
# Python package: a venv under target/ holds it.
if [ ! -x target/pyenv/bin/python ] || ! target/pyenv/bin/python -c 'import openai' 2>/dev/null; then
    echo "creating target/pyenv with the openai package" >&2
    python3 -m venv target/pyenv
    target/pyenv/bin/pip install -q --disable-pip-version-check 'openai>=1.50,<2'
fi

# The e2e tests run the service binaries: build them first, with the same
# package selection as the tests so nothing is compiled twice.
cargo build --workspace --all-targets --locked

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --profile ci "$@"
else
    cargo test --workspace --locked "$@"
fi

# The console (web/): dependencies as locked (the build above installed
# them when the lock changed), unit tests, then browser tests against
# target/debug/promptops, which embeds the console just built.
echo "== web console: unit tests" >&2
(cd web && { [ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error; } && npx vitest run)
echo "== web console: browser tests (Chromium)" >&2
(cd web && CHROMIUM="$(command -v chromium)" npx playwright test)
