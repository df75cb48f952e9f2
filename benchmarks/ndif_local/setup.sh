#!/bin/bash
# The NDIF server's own environment (default .ndif-venv; NDIF_VENV names another), apart from the
# project's: ndif 0.1.2 declares Python >= 3.12 but runs on 3.11, and it brings Ray. The pins
# match the client's nnsight and transformers. redis-server comes from Debian.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv="${NDIF_VENV:-.ndif-venv}"
command -v redis-server >/dev/null || apt-get install -y redis-server
python3.11 -m venv "$venv"
"$venv/bin/pip" install -q --ignore-requires-python --only-binary :all: -c constraints.txt \
    "ndif[api,ray]==0.1.2" "moto[server]" transformers==5.22.2 nnsight==0.8.1
echo "NDIF server environment ready in $venv"
