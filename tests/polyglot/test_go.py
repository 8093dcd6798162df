"""Go from the schema bundle with Debian's toolchain alone, offline (issue 10).

A module-scoped build: the bundle written to a temporary folder, Go code generated
from it twice (`protoc -I <bundle>`, and `protoc --descriptor_set_in=...` beside
nothing but the descriptor set), then two Go programs built against the first
tree with one build cache: tests/polyglot/golang/vectors.go checks every golden
vector, tests/polyglot/golang/client.go talks to a real server with grpc-go.
Nothing generated is committed. How the build resolves its imports offline:
tests/polyglot/golang_build.py.
"""

from __future__ import annotations

import base64
import filecmp
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from adaptive_pipeline.events.v1 import envelope_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from tests.conftest import ROOT, VECTORS_DIR
from tests.polyglot import golang_build
from tests.polyglot.golang_build import (
    CONTRACT_PACKAGE,
    GOCODE,
    VALIDATE_PACKAGE,
    GoEnv,
)
from tests.polyglot.known_differences import expected_failures
from tests.service.conftest import start_server_process, stop_process
from tools import bundle

GO_DIR = ROOT / "tests" / "polyglot" / "golang"
MANIFEST = json.loads((VECTORS_DIR / "manifest.json").read_text())["vectors"]
PACKAGES = (CONTRACT_PACKAGE, VALIDATE_PACKAGE)


@dataclass(frozen=True)
class GoBuild:
    from_sources: GoEnv  # the tree `protoc -I <bundle>` generated
    from_set: GoEnv  # the tree `protoc --descriptor_set_in=descriptor_set.binpb` generated
    vectors: Path
    client: Path


@pytest.fixture(scope="module")
def go(tmp_path_factory: pytest.TempPathFactory) -> GoBuild:
    tools = golang_build.require_toolchain()
    work = tmp_path_factory.mktemp("go")
    tree = bundle.write_tree(work / "bundle")
    files = golang_build.contract_files(tree)
    set_only = work / "descriptor-set-only"  # no .proto beside it: protoc reads only the set
    set_only.mkdir()
    shutil.copyfile(tree / "descriptor_set.binpb", set_only / "descriptor_set.binpb")
    cache = work / "gocache"  # one build cache for every build of this module
    from_sources = GoEnv(
        tools.go,
        golang_build.generate(
            tools, tree, files, work / "gopath-sources", from_descriptor_set=False
        ),
        cache,
    )
    from_set = GoEnv(
        tools.go,
        golang_build.generate(
            tools, set_only, files, work / "gopath-set", from_descriptor_set=True
        ),
        cache,
    )
    golang_build.check_shim(from_sources, GO_DIR)
    return GoBuild(
        from_sources,
        from_set,
        vectors=from_sources.build(GO_DIR / "vectors.go", work / "bin" / "vectors"),
        client=from_sources.build(GO_DIR / "client.go", work / "bin" / "client"),
    )


def _generated(gopath: Path) -> list[str]:
    return sorted(p.relative_to(gopath / "src").as_posix() for p in (gopath / "src").rglob("*"))


def test_both_protoc_forms_generate_the_same_go_code(go: GoBuild) -> None:
    names = _generated(go.from_sources.gopath)
    contract = f"{CONTRACT_PACKAGE}/"
    assert {f"{contract}envelope.pb.go", f"{contract}service_grpc.pb.go"} <= set(names)
    assert f"{VALIDATE_PACKAGE}/validate.pb.go" in names
    assert names == _generated(go.from_set.gopath)
    files = [name for name in names if name.endswith(".go")]
    _, differ, errors = filecmp.cmpfiles(
        go.from_sources.gopath / "src", go.from_set.gopath / "src", files, shallow=False
    )
    # Byte for byte, raw descriptors included. This holds because the contract writes each
    # field's validation rules as one option statement: Debian's protoc 3.21 keeps two
    # statements as two records, the newer protoc that wrote descriptor_set.binpb merges them.
    assert (differ, errors) == ([], [])


def test_the_code_generated_from_the_descriptor_set_compiles(go: GoBuild) -> None:
    # (Identical to the other tree today, but built on its own so that a difference, should
    # one appear, still has to compile.)
    go.from_set.go_cmd("build", *PACKAGES, cwd=GO_DIR)


def test_every_go_import_resolves_to_debian_sources_or_the_generated_code(go: GoBuild) -> None:
    # Offline and Debian-only: nothing from a module cache, a vendor folder or a user GOPATH.
    deps = {}
    for program in ("vectors.go", "client.go"):
        deps[program] = dirs = go.from_sources.dirs(program, GO_DIR)
        assert dirs.pop("command-line-arguments") == str(GO_DIR)
        outside = {
            path: where
            for path, where in dirs.items()
            if not where.startswith((f"{GOCODE}/src/", f"{go.from_sources.gopath}/src/"))
        }
        assert outside == {}, program
        assert dirs[CONTRACT_PACKAGE] == f"{go.from_sources.gopath}/src/{CONTRACT_PACKAGE}"
    # grpc-go's codec marshals through the 1.5 shim, built on google.golang.org/protobuf.
    shim = golang_build.check_shim(go.from_sources, GO_DIR)
    assert shim == GOCODE / "src" / "github.com/golang/protobuf/proto"
    assert deps["client.go"]["github.com/golang/protobuf/proto"] == str(shim)


def _prefix_keyed_map(message: Message) -> bool:
    """Whether a string-keyed map in `message`, at any depth, has a key that is a prefix of
    another (the empty key is a prefix of every key).

    There deterministic serialization differs between runtimes: Go (like C++ and Java)
    writes map entries in ascending bytewise key order, "" < "a" < "ab" < "b"; upb, under
    Python's protobuf, writes "ab", "a", "b", "": its string comparator negates memcmp and
    the encoder writes backwards, which restores ascending order except that the
    length tie-break comes out reversed (protocolbuffers/protobuf PR #26621, open).
    """
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            key, item = (
                field.message_type.fields_by_name["key"],
                field.message_type.fields_by_name["value"],
            )
            keys = list(value) if key.type == FieldDescriptor.TYPE_STRING else []
            if any(a != b and b.startswith(a) for a in keys for b in keys):
                return True
            children = list(value.values()) if item.message_type is not None else []
        else:
            children = list(value) if field.is_repeated else [value]
        if any(_prefix_keyed_map(child) for child in children):
            return True
    return False


def _check_vectors(go: GoBuild, manifest: Path) -> tuple[int, list[dict[str, Any]]]:
    result = subprocess.run(
        [str(go.vectors), str(manifest)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode in (0, 1), result.stdout + result.stderr
    return result.returncode, [json.loads(line) for line in result.stdout.splitlines()]


def test_go_decodes_and_reencodes_every_golden_vector(go: GoBuild) -> None:
    status, results = _check_vectors(go, VECTORS_DIR / "manifest.json")
    assert [r["name"] for r in results] == [v["name"] for v in MANIFEST]
    failed = {r["name"]: set(r.get("failed", {})) for r in results if not r["ok"]}
    # Exactly the differences the manifest pins for protobuf-go, no more and no fewer.
    assert failed == expected_failures(MANIFEST, "protobuf-go"), [r for r in results if not r["ok"]]
    assert status == (1 if failed else 0)


def test_go_vector_check_catches_a_corrupt_vector(go: GoBuild, tmp_path: Path) -> None:
    vectors = tmp_path / "v1"
    shutil.copytree(VECTORS_DIR, vectors)
    entry = next(v for v in MANIFEST if v["json"] is not None)
    binary = vectors / entry["binary"]
    event_id = json.loads((vectors / entry["json"]).read_text())["eventId"].encode()
    data = bytearray(binary.read_bytes())
    data[data.index(event_id)] ^= 0x01  # still valid UTF-8, but no longer the JSON's value
    binary.write_bytes(bytes(data))

    status, results = _check_vectors(go, vectors / "manifest.json")
    assert status == 1
    known = expected_failures(MANIFEST, "protobuf-go")
    assert [r["name"] for r in results if not r["ok"] and r["name"] not in known] == [entry["name"]]
    assert len(results) == len(MANIFEST)


def test_go_grpc_client_publishes_reads_and_subscribes(go: GoBuild, tmp_path: Path) -> None:
    server = start_server_process(f"sqlite:///{tmp_path}/events.db")
    try:
        result = subprocess.run(
            [str(go.client), server.target], capture_output=True, text=True, timeout=60, check=False
        )
    finally:
        exit_status = stop_process(server.process)
    assert result.returncode == 0, result.stdout + result.stderr
    assert exit_status == 0, "".join(server.log)
    report = json.loads(result.stdout)
    published = report["published"]
    ids = [e["event_id"] for e in published]
    count = len(published)
    assert [e["event_type"] for e in published] == [
        "EVENT_TYPE_PIPELINE_CREATED",
        "EVENT_TYPE_PROCESSING_STARTED",
        "EVENT_TYPE_CHUNK_PROCESSED",
        "EVENT_TYPE_CHUNK_PROCESSED",
        "EVENT_TYPE_PIPELINE_UPDATED",
    ]
    # Go's deterministic bytes are a valid envelope for the Python bindings, which encode it
    # again to the same bytes (fields by number, map entries by key), except where a map
    # has a key that is a prefix of another: see _prefix_keyed_map.
    for event in published:
        data = base64.b64decode(event["envelope"])
        envelope = envelope_pb2.EventEnvelope.FromString(data)
        assert envelope.event_id == event["event_id"]
        assert envelope.aggregate_id == report["pipeline_id"]
        assert envelope.schema_version == 1
        assert envelope_pb2.EventType.Name(envelope.event_type) == event["event_type"]
        assert (
            envelope.WhichOneof("payload")
            == event["event_type"].removeprefix("EVENT_TYPE_").lower()
        )
        python = envelope.SerializeToString(deterministic=True)
        if _prefix_keyed_map(envelope):  # ProcessingStarted: SecurityContext.metadata[""]
            assert python != data and len(python) == len(data)
        else:
            assert python == data

    # A fresh store: positions and revisions 1..N.
    expected_positions = [{"global_position": n, "revision": n} for n in range(1, count + 1)]
    assert report["positions"] == expected_positions
    for where in ("read", "subscribe"):
        events = report[where]["events"]
        assert [e["event_id"] for e in events] == ids, where
        assert [
            {"global_position": e["global_position"], "revision": e["revision"]} for e in events
        ] == expected_positions, where
        # What the server sent back is, byte for byte, what Go serialized.
        assert [e["envelope"] for e in events] == [e["envelope"] for e in published], where
        assert [e["reencoded"] for e in events] == [e["envelope"] for e in published], where
        assert all(e["same_message"] and e["recorded_at_set"] for e in events), where
    assert (report["read"]["last_revision"], report["read"]["next_revision"]) == (count, 0)
    assert report["subscribe"]["caught_up"] == report["positions"][-1]["global_position"]

    wrong = report["wrong_revision"]
    assert wrong["code"] == "FailedPrecondition"
    assert wrong["details"] == [
        {
            "type": "google.rpc.ErrorInfo",
            "reason": "WRONG_EXPECTED_REVISION",
            "domain": "adaptive_pipeline.events.v1",
            "metadata": {
                "aggregate_id": report["pipeline_id"],
                "expected": "1",
                "actual": str(count),
            },
        }
    ]
