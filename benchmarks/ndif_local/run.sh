#!/bin/bash
# Run serve_and_trace.py as root in a new network namespace that has only loopback, so that
# nothing the server starts (Ray rewrites 127.0.0.1 into the interface address) leaves this machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec unshare --net bash -c 'ip link set lo up && exec .venv/bin/python benchmarks/ndif_local/serve_and_trace.py "$@"' -- "$@"
