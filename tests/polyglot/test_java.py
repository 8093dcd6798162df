"""Java consumes the contract from the schema bundle with Debian's toolchain alone, offline.

protoc 3.21 (protobuf-compiler) generates Java from the bundle both ways, `-I <bundle>` and
`--descriptor_set_in=<bundle>/descriptor_set.binpb`; javac (OpenJDK 17) compiles it against
/usr/share/java/protobuf.jar (libprotobuf-java), and `java/Vectors.java` checks every golden vector
with protobuf-java and JsonFormat (protobuf-util.jar, gson.jar, guava.jar). Nothing is written
outside pytest's temporary directory.
"""

from __future__ import annotations

import base64
import difflib
import json
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import buf.validate.validate_pb2  # noqa: F401  (registers the options' extensions for comparison)
import pytest
from google.protobuf import descriptor_pb2, text_format

from tests.conftest import VECTORS_DIR
from tests.polyglot.java_build import (
    JavaBuild,
    Toolchain,
    compile_checks,
    generate_and_compile,
    toolchain,
)
from tests.polyglot.known_differences import expected_failures
from tools import bundle

JAVA_PACKAGE = "io.adaptivepipeline.events.v1"
CONTRACT_DIR = "adaptive_pipeline/events/v1"
FORMS = ("include", "descriptor_set")


@dataclass
class Java:
    tools: Toolchain
    bundle: Path
    builds: dict[str, JavaBuild]
    checks: Path  # Vectors and Descriptors, compiled

    def run(self, form: str, *args: str) -> subprocess.CompletedProcess[str]:
        cp = self.tools.classpath(self.checks, self.builds[form].classes)
        cmd = [self.tools.java, "-XX:TieredStopAtLevel=1", "-cp", cp, *args]
        return subprocess.run(cmd, capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def java(tmp_path_factory: pytest.TempPathFactory) -> Java:
    tools = toolchain()
    tmp = tmp_path_factory.mktemp("java")
    bundle_dir = bundle.write_tree(tmp / "bundle")
    contract = sorted(
        p.relative_to(bundle_dir).as_posix() for p in bundle_dir.glob(f"{CONTRACT_DIR}/*.proto")
    )
    proto_files = [*contract, "buf/validate/validate.proto"]
    with ThreadPoolExecutor(max_workers=len(FORMS)) as pool:  # 6 s instead of 9 on two cores
        jobs = {
            form: pool.submit(
                generate_and_compile, tools, bundle_dir, proto_files, tmp / form, form
            )
            for form in FORMS
        }
        builds = {form: job.result() for form, job in jobs.items()}
    return Java(tools, bundle_dir, builds, compile_checks(tools, builds["include"], tmp / "checks"))


def _descriptor_set(java: Java) -> descriptor_pb2.FileDescriptorSet:
    return descriptor_pb2.FileDescriptorSet.FromString(
        (java.bundle / "descriptor_set.binpb").read_bytes()
    )


def _contract_files(java: Java) -> list[descriptor_pb2.FileDescriptorProto]:
    return [f for f in _descriptor_set(java).file if f.name.startswith(CONTRACT_DIR + "/")]


@pytest.mark.parametrize("form", FORMS)
def test_generated_classes_are_in_the_contracts_java_package(java: Java, form: str) -> None:
    # java_package io.adaptivepipeline.events.v1 and java_multiple_files: one class per message
    # (and its OrBuilder) and per enum, plus each file's outer class; no service stubs (no plugin).
    build = java.builds[form]
    expected: set[str] = set()
    for file in _contract_files(java):
        assert file.options.java_package == JAVA_PACKAGE, file.name
        assert file.options.java_multiple_files, file.name
        expected.add(file.options.java_outer_classname)
        expected.update(m.name for m in file.message_type)
        expected.update(f"{m.name}OrBuilder" for m in file.message_type)
        expected.update(e.name for e in file.enum_type)
    package_dir = Path(*JAVA_PACKAGE.split("."))
    generated = {p.stem for p in (build.gen / package_dir).glob("*.java")}
    assert generated == expected
    compiled = {p.stem for p in (build.classes / package_dir).glob("*.class") if "$" not in p.stem}
    assert compiled == expected
    assert {"EventEnvelope", "EventType", "RecordedEvent", "ChunkProcessed"} <= compiled


def _without_json_names(java_source: str) -> str:
    # From a descriptor set, protoc sees each field's json_name as explicitly set and shows it in
    # the Javadoc: `uint64 secs = 1 [json_name = "secs"];` instead of `uint64 secs = 1;`.
    source = re.sub(r' \[json_name = "[^"]*"\]', "", java_source)
    return re.sub(r'\[json_name = "[^"]*", ', "[", source)


def _without_descriptor_data(java_source: str) -> str:
    return re.sub(r"descriptorData = \{\n.*?\n    \};\n", "", java_source, flags=re.DOTALL)


def test_both_forms_generate_the_same_code_but_for_json_name(java: Java) -> None:
    # Not byte-identical: a descriptor set records every field's json_name (protoc's own
    # --descriptor_set_out does too), so protoc shows it in the Javadoc and embeds it in the
    # serialized descriptor of each *Proto class. The json names are the derived ones, so the
    # code is the same: outside the embedded descriptors the sources match once the annotation
    # is removed, and the embedded descriptors match without json_name (next test).
    include, descriptor_set = (java.builds[form].gen for form in FORMS)
    files = sorted(p.relative_to(include).as_posix() for p in include.rglob("*.java"))
    assert files == sorted(
        p.relative_to(descriptor_set).as_posix() for p in descriptor_set.rglob("*.java")
    )
    differing = []
    for name in files:
        a, b = (
            _without_json_names((root / name).read_text()) for root in (include, descriptor_set)
        )
        if a != b:
            differing.append(name)
            a, b = _without_descriptor_data(a), _without_descriptor_data(b)
            assert a == b, "\n".join(
                difflib.unified_diff(a.splitlines(), b.splitlines(), lineterm="", n=1)
            )
    assert all(name.endswith("Proto.java") for name in differing), differing


def _text_diff(
    want: descriptor_pb2.FileDescriptorProto, got: descriptor_pb2.FileDescriptorProto
) -> str:
    lines = [text_format.MessageToString(m).splitlines() for m in (want, got)]
    return "\n".join(difflib.unified_diff(*lines, "bundle", "java", lineterm=""))


def _clean(file: descriptor_pb2.FileDescriptorProto) -> descriptor_pb2.FileDescriptorProto:
    """The descriptor without source info and json_name (the parts protoc embeds only sometimes)."""
    file.ClearField("source_code_info")

    def clear(message: descriptor_pb2.DescriptorProto) -> None:
        for f in [*message.field, *message.extension]:
            f.ClearField("json_name")
        for nested in message.nested_type:
            clear(nested)

    for message in file.message_type:
        clear(message)
    for f in file.extension:
        f.ClearField("json_name")
    return file


@pytest.mark.parametrize("form", FORMS)
def test_embedded_descriptors_are_the_bundles(java: Java, form: str) -> None:
    # What protobuf-java reflects (JsonFormat, getDescriptor()) is exactly the bundle's schema.
    result = java.run(form, "Descriptors")
    assert result.returncode == 0, result.stderr
    embedded = {
        line["file"]: descriptor_pb2.FileDescriptorProto.FromString(
            base64.b64decode(line["descriptor"])
        )
        for line in map(json.loads, result.stdout.splitlines())
    }
    shipped = {f.name: _clean(f) for f in _descriptor_set(java).file}
    assert set(embedded) == set(shipped)
    # google/protobuf/*: protobuf.jar's own compiled copies (3.21's descriptor.proto is older
    # than the one buf put in the set), not generated from the bundle.
    for name in sorted(n for n in shipped if not n.startswith("google/protobuf/")):
        got, want = embedded[name], shipped[name]
        assert got == want, f"{name}:\n{_text_diff(want, got)}"


def _check_vectors(java: Java, form: str, manifest: Path) -> tuple[list[dict], str]:
    result = java.run(form, "Vectors", str(manifest))
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert result.returncode in (0, 1), result.stdout + result.stderr
    return lines, result.stdout + result.stderr


@pytest.mark.parametrize("form", FORMS)
def test_java_decodes_and_reencodes_every_vector(java: Java, form: str) -> None:
    manifest = json.loads((VECTORS_DIR / "manifest.json").read_text())
    results, output = _check_vectors(java, form, VECTORS_DIR / "manifest.json")
    assert [r["name"] for r in results] == [v["name"] for v in manifest["vectors"]], output
    failed = {r["name"]: set(r["failed"]) for r in results if not r["ok"]}
    # Exactly the differences the manifest pins for protobuf-java, no more and no fewer.
    known = expected_failures(manifest["vectors"], "protobuf-java")
    assert failed == known, json.dumps([r for r in results if not r["ok"]], indent=2)
    assert f"{len(manifest['vectors']) - len(known)} passed, {len(known)} failed" in output


def test_java_check_catches_a_corrupt_vector(java: Java, tmp_path: Path) -> None:
    vectors = tmp_path / "v1"
    shutil.copytree(VECTORS_DIR, vectors)
    manifest = json.loads((vectors / "manifest.json").read_text())
    entry = next(v for v in manifest["vectors"] if v.get("json"))
    binary = vectors / (entry.get("canonical_binary") or entry["binary"])
    event_id = json.loads((vectors / entry["json"]).read_text())["eventId"].encode()
    data = bytearray(binary.read_bytes())
    data[data.index(event_id)] ^= 0x01  # still ASCII, so it decodes but no longer matches the JSON
    binary.write_bytes(bytes(data))

    results, output = _check_vectors(java, "include", vectors / "manifest.json")
    known = expected_failures(manifest["vectors"], "protobuf-java")
    failed = {r["name"]: r["reason"] for r in results if not r["ok"] and r["name"] not in known}
    assert list(failed) == [entry["name"]], output
    assert "event_id" in failed[entry["name"]], output


def test_java_toolchain_is_installed() -> None:
    # Fails (never skips) naming the apt packages when a tool or jar is missing; the fixture
    # above fails the same way for every other test here.
    toolchain()
