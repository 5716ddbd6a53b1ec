#!/usr/bin/env bash
# Regenerates the committed protobuf/gRPC modules under proto/ from the .proto sources.
# tests/test_proto_fresh.py fails when the committed modules are stale.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
mapfile -t protos < <(find proto -name '*.proto' | sort)
"$PY" -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. "${protos[@]}"
