"""C++ from the schema bundle with Debian's toolchain alone: protoc --cpp_out, then g++ -c.

protoc 3.21 (protobuf-compiler) generates C++ from the bundle both ways, `-I <bundle>` and
`--descriptor_set_in=<bundle>/descriptor_set.binpb`; g++ compiles every .pb.cc of the first against
libprotobuf-dev's headers (nothing is linked or run; 13-19 s on two cores). The second is the same
code but for json_name in comments and in the embedded descriptors (checked below), so it is not
compiled again: that would double the time and prove nothing more. Nothing is written outside pytest's temporary directory.
"""

from __future__ import annotations

import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.polyglot.java_build import run
from tools import bundle

CONTRACT_DIR = "adaptive_pipeline/events/v1"
FORMS = ("include", "descriptor_set")
APT_PACKAGES = ("protobuf-compiler", "libprotobuf-dev", "g++")
HEADER = Path("/usr/include/google/protobuf/message.h")  # libprotobuf-dev
CXXFLAGS = ("-std=c++17", "-O0", "-c")


@dataclass
class Cpp:
    proto_files: list[str]
    gen: dict[str, Path]
    objects: list[Path]  # of gen["include"]


def _tools() -> tuple[str, str]:
    protoc, cxx = shutil.which("protoc"), shutil.which("g++")
    missing = [f"`{name}`" for name, path in (("protoc", protoc), ("g++", cxx)) if not path]
    if not HEADER.exists():
        missing.append(f"{HEADER} (libprotobuf-dev)")
    if missing or protoc is None or cxx is None:
        pytest.fail(
            f"the C++ checks need Debian's protoc, g++ and protobuf headers; missing: "
            f"{', '.join(missing)}. Install: apt-get install {' '.join(APT_PACKAGES)}",
            pytrace=False,
        )
    return protoc, cxx


@pytest.fixture(scope="module")
def cpp(tmp_path_factory: pytest.TempPathFactory) -> Cpp:
    protoc, cxx = _tools()
    tmp = tmp_path_factory.mktemp("cpp")
    bundle_dir = bundle.write_tree(tmp / "bundle")
    contract = sorted(
        p.relative_to(bundle_dir).as_posix() for p in bundle_dir.glob(f"{CONTRACT_DIR}/*.proto")
    )
    proto_files = [*contract, "buf/validate/validate.proto"]
    result = Cpp(proto_files, {}, [])
    for form in FORMS:
        gen = result.gen[form] = tmp / form / "gen"
        gen.mkdir(parents=True)
        source = (
            ["-I", str(bundle_dir)]
            if form == "include"
            else [f"--descriptor_set_in={bundle_dir / 'descriptor_set.binpb'}"]
        )
        run([protoc, *source, f"--cpp_out={gen}", *proto_files], cwd=bundle_dir)

    jobs = []
    gen, obj = result.gen["include"], tmp / "obj"
    obj.mkdir()
    for unit in sorted(gen.rglob("*.pb.cc")):
        out = obj / f"{unit.relative_to(gen).as_posix().replace('/', '__')}.o"
        result.objects.append(out)
        jobs.append([cxx, *CXXFLAGS, "-I", str(gen), "-o", str(out), str(unit)])
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        list(pool.map(run, jobs))
    return result


@pytest.mark.parametrize("form", FORMS)
def test_protoc_writes_a_header_and_source_per_file(cpp: Cpp, form: str) -> None:
    gen = cpp.gen[form]
    expected = {
        f"{name.removesuffix('.proto')}.pb.{ext}" for name in cpp.proto_files for ext in ["h", "cc"]
    }
    assert {p.relative_to(gen).as_posix() for p in gen.rglob("*.pb.*")} == expected
    header = (gen / CONTRACT_DIR / "envelope.pb.h").read_text()
    assert "namespace adaptive_pipeline {\nnamespace events {\nnamespace v1 {" in header
    assert "class EventEnvelope final :" in header


def test_generated_cpp_compiles(cpp: Cpp) -> None:
    # The fixture ran g++ -c on every .pb.cc (a failure fails it with the compiler's output).
    assert len(cpp.objects) == len(cpp.proto_files)
    assert all(obj.stat().st_size > 0 for obj in cpp.objects)


def test_both_forms_generate_the_same_cpp_but_for_json_name(cpp: Cpp) -> None:
    # As for Java: from a descriptor set protoc sees each field's json_name as set, shows it in
    # the comments and embeds it in each file's serialized descriptor; nothing else differs.
    include, descriptor_set = (cpp.gen[form] for form in FORMS)
    files = sorted(p.relative_to(include).as_posix() for p in include.rglob("*.pb.*"))
    assert files == sorted(
        p.relative_to(descriptor_set).as_posix() for p in descriptor_set.rglob("*.pb.*")
    )
    for name in files:
        a, b = ((root / name).read_text() for root in (include, descriptor_set))
        b = re.sub(r' \[json_name = "[^"]*"\]', "", b)
        b = re.sub(r'\[json_name = "[^"]*", ', "[", b)
        if name.endswith(".pb.cc"):
            # The serialized descriptor (descriptor_table_protodef_...) and its size.
            pattern = r"(descriptor_table_protodef_\w+\[\] PROTOBUF_SECTION_VARIABLE\(protodesc_cold\) =\n).*?;\n"
            a, b = (re.sub(pattern, r"\1...;\n", s, flags=re.DOTALL) for s in (a, b))
            a, b = (
                re.sub(r"(false, false, )\d+(, descriptor_table_protodef_)", r"\1N\2", s)
                for s in (a, b)
            )
        assert a == b, name
