"""Go from the schema bundle with Debian's toolchain alone, offline: protoc, the Go plugins, go.

How Go finds its dependencies here, and why GOPATH mode: Debian packages Go
libraries as source under /usr/share/gocode/src, laid out by import path, which
is exactly a GOPATH entry. So the build runs with GO111MODULE=off and
GOPATH=<tmp>:/usr/share/gocode: the generated code goes into <tmp>/src under the
import paths its go_package options declare (protoc-gen-go's default
paths=import), and every import resolves to a directory on disk; there is no
module graph, hence nothing to download (GOPROXY=off and GOFLAGS= only make sure
of that). A module with replace directives into /usr/share/gocode/src does not
work offline: Debian's grpc-go go.mod (go 1.11, no graph pruning) requires
modules Debian does not ship (cncf/udpa, envoyproxy/go-control-plane), which Go
would then need to fetch just to load the graph.

buf/validate/validate.proto is generated under its own declared go_package
(buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate), the
import path the contract's code imports it by: the same protoc command as the
contract, no M option (the path is buf's generated SDK for protovalidate, so a
project that later takes that module instead just drops the local copy).

The trap: golang-google-grpc-dev depends on "golang-github-golang-protobuf-1-3-dev
| golang-github-golang-protobuf-1-5-dev", and apt takes the first. Both install
github.com/golang/protobuf into the same directory (they conflict), and grpc-go's
codec marshals through it; the 1.3 package walks struct tags itself and panics on
the oneofs of APIv2 (protoc-gen-go 1.20+) messages. The 1.5 package is a thin
layer over google.golang.org/protobuf. `check_shim` makes sure that is the one
the build resolves.

CGO_ENABLED=0: pure Go, so no C compiler is needed (none is in the package list).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

#: What CI installs (`make toolchains`), and what a failure here tells you to install.
APT_PACKAGES = (
    "protobuf-compiler",
    "golang-go",
    "golang-google-protobuf-dev",
    "protoc-gen-go",
    "golang-google-grpc-dev",
    "protoc-gen-go-grpc",
    "golang-github-golang-protobuf-1-5-dev",
)
GOCODE = Path("/usr/share/gocode")
#: Source directories under /usr/share/gocode/src the Go programs need, and their packages.
LIBRARIES = {
    "google.golang.org/protobuf": "golang-google-protobuf-dev",
    "google.golang.org/grpc": "golang-google-grpc-dev",
    "github.com/golang/protobuf": "golang-github-golang-protobuf-1-5-dev",
    # grpc-go's status package is built on genproto's; errdetails comes with it.
    "google.golang.org/genproto/googleapis/rpc/errdetails": "golang-google-genproto-dev",
}
CONTRACT_DIR = "adaptive_pipeline/events/v1"
CONTRACT_PACKAGE = "github.com/adaptive-pipeline/pipeline-events/gen/go/adaptive_pipeline/events/v1"
VALIDATE_PACKAGE = "buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
VALIDATE_PROTO = "buf/validate/validate.proto"


def missing(what: str) -> NoReturn:
    """Fail (never skip: a skipped consumer would be a fake pass) naming what to install."""
    pytest.fail(
        f"{what}. The Go consumer checks need Debian's toolchain: `make toolchains`, or "
        f"apt-get install {' '.join(APT_PACKAGES)}",
        pytrace=False,
    )


@dataclass(frozen=True)
class Toolchain:
    protoc: str
    protoc_gen_go: str
    protoc_gen_go_grpc: str
    go: str


def _which(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        missing(f"`{name}` is not on PATH (Debian package {package})")
    return path


def require_toolchain() -> Toolchain:
    """The tools and library sources, or a test failure naming the apt packages."""
    tools = Toolchain(
        protoc=_which("protoc", "protobuf-compiler"),
        protoc_gen_go=_which("protoc-gen-go", "protoc-gen-go"),
        protoc_gen_go_grpc=_which("protoc-gen-go-grpc", "protoc-gen-go-grpc"),
        go=_which("go", "golang-go"),
    )
    # The APIv2 plugin (google.golang.org/protobuf/cmd/protoc-gen-go), not the 1.3 one that
    # golang-goprotobuf-dev installs (which would read a request from stdin: hence DEVNULL).
    version = subprocess.run(
        [tools.protoc_gen_go, "--version"], stdin=subprocess.DEVNULL, capture_output=True,
        text=True, timeout=30, check=False,
    )  # fmt: skip
    if not re.match(r"protoc-gen-go v1\.(2\d|[3-9]\d)\.", version.stdout):
        missing(
            f"{tools.protoc_gen_go} is not the APIv2 protoc-gen-go (1.20+): "
            f"--version said {version.stdout.strip() or version.stderr.strip()!r}"
        )
    absent = [
        f"{path} ({package})"
        for path, package in LIBRARIES.items()
        if not (GOCODE / "src" / path).is_dir()
    ]
    if absent:
        missing(f"Go library sources missing under {GOCODE}/src: {', '.join(absent)}")
    return tools


def contract_files(tree: Path) -> list[str]:
    """The contract's .proto files, as protoc names them (relative to the bundle)."""
    return sorted(p.relative_to(tree).as_posix() for p in (tree / CONTRACT_DIR).glob("*.proto"))


def protoc_command(
    tools: Toolchain, files: list[str], out: Path, *, from_descriptor_set: bool
) -> list[str]:
    """The command a Go user runs in the unpacked bundle (or beside descriptor_set.binpb): the
    plugins are found on PATH as protoc-gen-go and protoc-gen-go-grpc, as /usr/bin has them."""
    source = ["--descriptor_set_in=descriptor_set.binpb"] if from_descriptor_set else ["-I", "."]
    return [
        tools.protoc,
        *source,
        f"--go_out={out}",
        f"--go-grpc_out={out}",
        *files,
        VALIDATE_PROTO,
    ]


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    """Run a build step; its failure fails the test with its output. Returns stdout."""
    result = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}",
            pytrace=False,
        )
    return result.stdout


def generate(tools: Toolchain, cwd: Path, files: list[str], gopath: Path, **form: bool) -> Path:
    """Generate into `gopath`/src (a GOPATH entry); returns `gopath`."""
    (gopath / "src").mkdir(parents=True)
    run(protoc_command(tools, files, gopath / "src", **form), cwd=cwd)
    return gopath


@dataclass(frozen=True)
class GoEnv:
    """`go` in GOPATH mode over one generated tree and Debian's sources, with its own cache."""

    go: str
    gopath: Path
    cache: Path

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GO")}
        env.update(
            GO111MODULE="off",
            GOPATH=f"{self.gopath}{os.pathsep}{GOCODE}",
            GOCACHE=str(self.cache),
            GOPROXY="off",
            GOFLAGS="",
            GOENV="off",  # ignore a user's `go env -w` settings
            GOTOOLCHAIN="local",  # Go 1.21+: never fetch another toolchain
            CGO_ENABLED="0",
        )
        return env

    def go_cmd(self, *args: str, cwd: Path) -> str:
        return run([self.go, *args], cwd=cwd, env=self.env)

    def build(self, source: Path, output: Path) -> Path:
        """`go build` one program, by file name (the Go folder holds two package mains)."""
        self.go_cmd("build", "-o", str(output), source.name, cwd=source.parent)
        return output

    def dirs(self, target: str, cwd: Path) -> dict[str, str]:
        """Import path -> source directory of `target` and all its non-standard dependencies."""
        out = self.go_cmd(
            "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}} {{.Dir}}{{end}}", target,
            cwd=cwd,
        )  # fmt: skip
        return dict(line.split(" ", 1) for line in out.splitlines() if line)


def check_shim(env: GoEnv, cwd: Path) -> Path:
    """github.com/golang/protobuf/proto must be the 1.4+ shim over google.golang.org/protobuf
    (Debian ships 1.5); returns its directory."""
    out = env.go_cmd(
        "list", "-f", '{{.Dir}}|{{join .Imports " "}}', "github.com/golang/protobuf/proto", cwd=cwd
    )
    directory, imports = out.strip().split("|", 1)
    if "google.golang.org/protobuf/proto" not in imports.split():
        missing(
            f"github.com/golang/protobuf/proto resolves to {directory}, the 1.3 package (not built "
            "on google.golang.org/protobuf): grpc-go would panic marshalling oneofs. Install "
            "golang-github-golang-protobuf-1-5-dev (it replaces golang-github-golang-protobuf-1-3-dev)"
        )
    return Path(directory)
