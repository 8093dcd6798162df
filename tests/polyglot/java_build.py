"""Java from the schema bundle with Debian's toolchain alone: protoc, javac and /usr/share/java jars.

No Maven, no network: `protoc --java_out` from the bundle (`-I` or `--descriptor_set_in`), then
plain `javac` with a classpath of Debian's jars. A missing tool or jar fails the test, naming the
apt packages that provide it.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

JAVA_DIR = Path(__file__).resolve().parent / "java"
SHARE_JAVA = Path("/usr/share/java")

# Debian bookworm: what provides each tool and jar. libprotobuf-dev holds the well-known types'
# .proto files (/usr/include/google/protobuf), which `protoc -I <bundle>` needs for the imports:
# protoc looks for them in <its directory>/../include.
TOOLS = {
    "protoc": "protobuf-compiler",
    "javac": "openjdk-17-jdk-headless",
    "java": "openjdk-17-jre-headless",
}
WELL_KNOWN_PROTO = Path("include/google/protobuf/timestamp.proto")
JARS = {
    "protobuf.jar": "libprotobuf-java",  # the runtime: all the generated code needs
    "protobuf-util.jar": "libprotobuf-java",  # JsonFormat
    "gson.jar": "libgoogle-gson-java",  # JsonFormat's JSON, and the manifest
    "guava.jar": "libguava-java",  # JsonFormat's dependency
}
APT_PACKAGES = (
    "protobuf-compiler",
    "libprotobuf-dev",
    "openjdk-17-jdk-headless",
    "libprotobuf-java",
    "libgoogle-gson-java",
    "libguava-java",
)
# Speed only: no annotation processors to look for; a short-lived compiler needs no C2 JIT.
JAVAC_OPTIONS = ("-encoding", "UTF-8", "-nowarn", "-proc:none", "-J-XX:TieredStopAtLevel=1")


@dataclass(frozen=True)
class Toolchain:
    protoc: str
    javac: str
    java: str
    jars: dict[str, Path]

    def classpath(self, *dirs: Path, jars: tuple[str, ...] = tuple(JARS)) -> str:
        return ":".join([*map(str, dirs), *(str(self.jars[name]) for name in jars)])


def toolchain() -> Toolchain:
    """The tools and jars; any missing one fails the test with the apt command that installs all."""
    missing = [f"`{name}` ({package})" for name, package in TOOLS.items() if not shutil.which(name)]
    protoc = shutil.which("protoc")
    well_known = Path(protoc).resolve().parent.parent / WELL_KNOWN_PROTO if protoc else None
    if well_known and not well_known.exists():
        missing.append(f"{well_known} (libprotobuf-dev)")
    missing += [
        f"{SHARE_JAVA / jar} ({package})"
        for jar, package in JARS.items()
        if not (SHARE_JAVA / jar).is_file()
    ]
    if missing:
        pytest.fail(
            "the Java checks need Debian's protoc, JDK and protobuf jars; missing: "
            f"{', '.join(missing)}. Install: apt-get install {' '.join(APT_PACKAGES)}",
            pytrace=False,
        )
    return Toolchain(
        protoc=str(protoc),
        javac=str(shutil.which("javac")),
        java=str(shutil.which("java")),
        jars={jar: SHARE_JAVA / jar for jar in JARS},
    )


def run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a build step; its failure fails the test with the command and its output."""
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        shown = " ".join(cmd if len(cmd) < 20 else [*cmd[:19], f"... ({len(cmd)} args)"])
        pytest.fail(
            f"{shown} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}",
            pytrace=False,
        )
    return result


@dataclass
class JavaBuild:
    """Code protoc generated from the bundle in one way, and its compiled classes."""

    form: str  # "include" (-I <bundle>) or "descriptor_set" (--descriptor_set_in)
    gen: Path
    classes: Path


def generate_and_compile(
    tools: Toolchain, bundle_dir: Path, proto_files: list[str], out: Path, form: str
) -> JavaBuild:
    """protoc --java_out from the bundle, then javac of everything it wrote against protobuf.jar
    alone (all a Java user needs to compile the generated code)."""
    build = JavaBuild(form, out / "gen", out / "classes")
    build.gen.mkdir(parents=True)
    build.classes.mkdir(parents=True)
    source = (
        ["-I", str(bundle_dir)]
        if form == "include"
        else [f"--descriptor_set_in={bundle_dir / 'descriptor_set.binpb'}"]
    )
    run([tools.protoc, *source, f"--java_out={build.gen}", *proto_files], cwd=bundle_dir)
    sources = sorted(str(p) for p in build.gen.rglob("*.java"))
    run(
        [tools.javac, *JAVAC_OPTIONS, "-d", str(build.classes),
         "-cp", tools.classpath(jars=("protobuf.jar",)), *sources]
    )  # fmt: skip
    return build


def compile_checks(tools: Toolchain, against: JavaBuild, out: Path) -> Path:
    """javac of tests/polyglot/java/*.java (Vectors, Descriptors) into `out`."""
    out.mkdir(parents=True)
    sources = sorted(str(p) for p in JAVA_DIR.glob("*.java"))
    run(
        [tools.javac, *JAVAC_OPTIONS, "-d", str(out),
         "-cp", tools.classpath(against.classes), *sources]
    )  # fmt: skip
    return out
