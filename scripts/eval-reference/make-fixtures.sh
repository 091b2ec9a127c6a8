#!/usr/bin/env bash
# Regenerates the metric parity fixtures with pinned reference versions.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=target/eval-reference-env
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check \
        'sacrebleu==2.6.0' 'rouge-score==0.1.2' 'nltk==3.10.4'
fi
"$venv/bin/python" scripts/eval-reference/make_parity_fixtures.py
