#!/usr/bin/env bash
# Install AWS SAM CLI into its own virtual environment (default .venv-sam), never into the project's .venv:
# aws-sam-cli pins many libraries (boto3, botocore, ...). Versions: requirements/sam.txt (aws-sam-cli) and
# requirements/sam-constraints.txt (pip freeze of a working .venv-sam). Idempotent; about 1.5 minutes fresh.
#
#   bash scripts/install_sam.sh            # PYTHON=python3 SAM_VENV=.venv-sam by default
#   .venv-sam/bin/sam validate --lint      # works offline, no AWS credentials or region needed
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
SAM_VENV="${SAM_VENV:-.venv-sam}"
test -x "$SAM_VENV/bin/python" || "$PYTHON" -m venv "$SAM_VENV"
"$SAM_VENV/bin/python" -m pip install -q --disable-pip-version-check \
    -c requirements/sam-constraints.txt -r requirements/sam.txt
SAM_CLI_TELEMETRY=0 "$SAM_VENV/bin/sam" --version
