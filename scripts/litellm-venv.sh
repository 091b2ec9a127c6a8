#!/usr/bin/env bash
# LiteLLM's proxy in a venv under target/, for the overhead benchmark's
# comparison (tests/e2e/benches/overhead.rs). Not needed by the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x target/litellm-env/bin/litellm ]; then
    python3 -m venv target/litellm-env
    target/litellm-env/bin/pip install -q --disable-pip-version-check 'litellm[proxy]==1.106.2'
fi
target/litellm-env/bin/litellm --version 2>/dev/null || true
