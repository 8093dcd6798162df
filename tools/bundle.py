"""Write the self-contained schema bundle (`make bundle`): everything protoc needs, offline.

The tree, the same in the tarball and in the wheel (`pipeline_events/bundle/`):

    README.md                         how to generate code with protoc alone
    descriptor_set.binpb              the whole compiled schema, with comments
    adaptive_pipeline/events/v1/*.proto
    buf/validate/validate.proto       protovalidate's schema, derived from its wheel
    buf/validate/LICENSE              protovalidate's licence (Apache-2.0)

`protoc -I <bundle> ...` compiles it; so does `protoc --descriptor_set_in=<bundle>/descriptor_set.binpb`.
"""

from __future__ import annotations

import argparse
import gzip
import io
import shutil
import tarfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
SCHEMA_DIR = ROOT / "generated" / "schema"


def bundle_files() -> dict[str, Path]:
    """Each file of the bundle: its path in the bundle -> where it comes from in the checkout."""
    files = {"README.md": PROTO_DIR / "README.md"}
    for source in sorted(PROTO_DIR.rglob("*.proto")):
        files[source.relative_to(PROTO_DIR).as_posix()] = source
    for source in sorted(p for p in SCHEMA_DIR.rglob("*") if p.is_file()):
        files[source.relative_to(SCHEMA_DIR).as_posix()] = source
    return files


def version() -> str:
    """The package's version, from pyproject.toml."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def write_tree(dest: Path) -> Path:
    """Copy the bundle into `dest` (created, or emptied first); returns `dest`."""
    shutil.rmtree(dest, ignore_errors=True)
    for name, source in bundle_files().items():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    return dest


def write_tarball(path: Path) -> Path:
    """The bundle as a reproducible .tar.gz, under one top-level folder named like the file."""
    top = path.name.removesuffix(".tar.gz")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, source in bundle_files().items():
            data = source.read_bytes()
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mode, info.mtime = len(data), 0o644, 0  # same bytes every time
            tar.addfile(info, io.BytesIO(data))
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(path, "wb", mtime=0) as archive:
        archive.write(buffer.getvalue())
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build", help="default: build/")
    args = parser.parse_args(argv)
    name = f"pipeline-events-schema-{version()}"
    tree = write_tree(args.out / name)
    tarball = write_tarball(args.out / f"{name}.tar.gz")
    print(f"wrote {tree} and {tarball}")


if __name__ == "__main__":
    main()
