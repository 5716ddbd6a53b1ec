"""The generated protobuf/gRPC modules are committed; they must match the .proto sources."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_generated_modules_are_fresh(tmp_path):
    pytest.importorskip("grpc_tools")
    protos = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "proto").rglob("*.proto"))
    assert protos, "no .proto sources found"
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", ".",
                    f"--python_out={tmp_path}", f"--pyi_out={tmp_path}",
                    f"--grpc_python_out={tmp_path}", *protos], cwd=ROOT, check=True)
    stale = []
    for gen in tmp_path.rglob("*.py*"):
        rel = gen.relative_to(tmp_path)
        committed = ROOT / rel
        if not committed.exists() or committed.read_bytes() != gen.read_bytes():
            stale.append(str(rel))
    assert not stale, f"stale generated modules (run scripts/gen-proto.sh): {stale}"
