"""Regenerate every committed binding under generated/ from proto/ (run by `make generate`)."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
PROTOVALIDATE_DIR = ROOT / "build" / "protovalidate"
PROTOVALIDATE_SET = PROTOVALIDATE_DIR / "protovalidate.binpb"
OUT = ROOT / "generated" / "python"
# betterproto2 writes its own google/protobuf package and imports relatively,
# so its output must stay a sub-package and never become a sys.path root.
BETTERPROTO_OUT = OUT / "adaptive_pipeline_betterproto"
DESCRIPTOR_SET = OUT / "adaptive_pipeline" / "events" / "v1" / "descriptor_set.binpb"
# protovalidate's schema as source, with its licence, for users of protoc alone:
# part of the schema bundle (tools/bundle.py) and of the wheel.
SCHEMA_OUT = ROOT / "generated" / "schema"
VALIDATE_PROTO = "buf/validate/validate.proto"
SERVICE_FILES = [
    "adaptive_pipeline/events/v1/consumer_group.proto",
    "adaptive_pipeline/events/v1/service.proto",
]
# Dataclasses only: the official bindings own the server, the client stubs,
# reflection and validation (and the descriptor pool, hence no
# google_protobuf_descriptors). Without stubs the betterproto layer does not
# import grpc, which stays an optional extra.
BETTERPROTO_OPTS = "client_generation=none,server_generation=none"


def proto_files() -> list[str]:
    """Our .proto files, relative to proto/, sorted so the output is reproducible."""
    return sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))


def protoc(*args: str) -> None:
    """Run grpc_tools' protoc (it adds the well-known types' include path itself).

    The plugins (protoc-gen-mypy...) live beside this interpreter, which need
    not be on PATH (make calls .venv/bin/python without activating the venv).
    """
    cmd = [sys.executable, "-m", "grpc_tools.protoc", *args]
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    result = subprocess.run(cmd, cwd=ROOT, check=False, env=env)
    if result.returncode != 0:
        raise SystemExit(f"protoc failed: {' '.join(cmd)}")


def betterproto_plugin() -> Path:
    """An executable for tools/betterproto2_plugin.py, run by this same interpreter."""
    plugin = ROOT / "build" / "bin" / "protoc-gen-python_betterproto2"
    plugin.parent.mkdir(parents=True, exist_ok=True)
    script = ROOT / "tools" / "betterproto2_plugin.py"
    plugin.write_text(f"#!/bin/sh\nexec '{sys.executable}' '{script}' \"$@\"\n")
    plugin.chmod(0o755)
    return plugin


def write_validate_schema() -> None:
    """generated/schema/buf/validate: the derived validate.proto and protovalidate's licence."""
    target = SCHEMA_OUT / VALIDATE_PROTO
    target.parent.mkdir(parents=True)
    shutil.copyfile(PROTOVALIDATE_DIR / VALIDATE_PROTO, target)
    licence = next(
        f for f in importlib.metadata.files("protovalidate") or () if f.name == "LICENSE"
    )
    shutil.copyfile(licence.locate(), target.parent / "LICENSE")


def main() -> None:
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "protovalidate_proto.py"),
            "--out-dir",
            str(PROTOVALIDATE_DIR),
        ],
        check=True,
    )
    shutil.rmtree(OUT, ignore_errors=True)
    shutil.rmtree(SCHEMA_OUT, ignore_errors=True)
    BETTERPROTO_OUT.mkdir(parents=True)
    files = proto_files()
    common = [f"-I{PROTO_DIR}", f"--descriptor_set_in={PROTOVALIDATE_SET}"]
    write_validate_schema()

    # Official bindings and typed stubs (mypy-protobuf).
    protoc(*common, f"--python_out={OUT}", f"--mypy_out={OUT}", *files)
    # The descriptor set that other languages and reflection use: compiled from
    # source, protovalidate's included, so every file carries its source info
    # (comments); google/protobuf files only as imported.
    protoc(
        f"-I{PROTO_DIR}",
        f"-I{SCHEMA_OUT}",
        "--include_imports",
        "--include_source_info",
        f"--descriptor_set_out={DESCRIPTOR_SET}",
        *files,
    )
    shutil.copyfile(DESCRIPTOR_SET, SCHEMA_OUT / DESCRIPTOR_SET.name)  # the bundle's copy
    # gRPC stubs only for the file that defines a service.
    protoc(*common, f"--grpc_python_out={OUT}", f"--mypy_grpc_out={OUT}", *SERVICE_FILES)
    # The official runtime's binding of buf/validate/validate.proto, which our
    # _pb2 modules import for their option annotations.
    protoc(
        f"--descriptor_set_in={PROTOVALIDATE_SET}",
        f"--python_out={OUT}",
        "buf/validate/validate.proto",
    )
    # betterproto2 reads comments from every file it is handed, so it gets
    # protovalidate's reconstructed source (-I) instead of the descriptor set.
    protoc(
        f"-I{PROTO_DIR}",
        f"-I{PROTOVALIDATE_DIR}",
        f"--plugin=protoc-gen-python_betterproto2={betterproto_plugin()}",
        f"--python_betterproto2_out={BETTERPROTO_OUT}",
        f"--python_betterproto2_opt={BETTERPROTO_OPTS}",
        *files,
    )
    # PEP 561 markers: the official bindings ship .pyi stubs, so type checkers of
    # installed-package users should read them (namespace packages: the leaf packages).
    for typed in (OUT / "adaptive_pipeline" / "events" / "v1", OUT / "buf" / "validate"):
        (typed / "py.typed").write_text("")


if __name__ == "__main__":
    main()
