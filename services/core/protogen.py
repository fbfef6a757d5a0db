"""Regenerates the checked-in gRPC stubs from ``protos/``: ``python -m services.core.protogen``.

Each ``protos/services/<pkg>/<name>.proto`` declares ``package services.<pkg>;`` and is compiled
with ``protos/`` as the include root, so its code lands in ``services/<pkg>/<name>_pb2.py`` and
its imports (``from services.core import common_pb2``) are right without any rewriting.
``--check`` compares freshly generated stubs with the checked-in ones instead of writing them.

Protos kept under another folder for their own API (``protos/riva/``: NVIDIA Riva's packages
``nvidia.riva.*``) are compiled under the virtual path of ``VIRTUAL_ROOTS`` (protoc's
``-Ivirtual=folder``), so their code too lands at an import path of ours
(``services/riva/riva_asr_pb2.py``) and their imports name that path.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO_ROOT / "protos"
# protos/<folder> -> the path its protos are compiled (and import each other) under
VIRTUAL_ROOTS = {"riva": "services/riva"}


def proto_files(proto_root: Path = PROTO_ROOT) -> list[Path]:
    return sorted(proto_root.rglob("*.proto"))


def _virtual_root(proto: Path, proto_root: Path) -> tuple[Path, str] | None:
    """(folder, virtual path) when ``proto`` is compiled under a virtual path."""
    top = proto.relative_to(proto_root).parts[0]
    return (proto_root / top, VIRTUAL_ROOTS[top]) if top in VIRTUAL_ROOTS else None


def compiled_name(proto: Path, proto_root: Path = PROTO_ROOT) -> Path:
    """The path protoc knows ``proto`` by (its imports name it so)."""
    if (virtual := _virtual_root(proto, proto_root)) is not None:
        return Path(virtual[1]) / proto.relative_to(virtual[0])
    return proto.relative_to(proto_root)


def generated_names(proto: Path, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """The stub paths (relative to the repository root) that ``proto`` compiles to."""
    stem = compiled_name(proto, proto_root).with_suffix("")
    suffixes = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
    return [stem.with_name(stem.name + suffix) for suffix in suffixes]


def generate(out_dir: Path, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Compiles every proto under ``proto_root`` into ``out_dir``; returns the written paths."""
    well_known = resources.files("grpc_tools") / "_proto"
    protos = proto_files(proto_root)
    for proto in protos:
        virtual = _virtual_root(proto, proto_root)
        include = f"-I{virtual[1]}={virtual[0]}" if virtual else f"-I{proto_root}"
        args = ["grpc_tools.protoc", include, f"-I{well_known}",
                f"--python_out={out_dir}", f"--pyi_out={out_dir}",
                f"--grpc_python_out={out_dir}", str(proto)]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {proto}")
    return [out_dir / name for proto in protos for name in generated_names(proto, proto_root)]


def stale_stubs(repo_root: Path = REPO_ROOT) -> list[str]:
    """Stub files that are missing or differ from what the protos generate now."""
    with tempfile.TemporaryDirectory() as tmp:
        written = generate(Path(tmp), repo_root / "protos")
        stale = []
        for path in written:
            relative = path.relative_to(tmp)
            checked_in = repo_root / relative
            if not checked_in.exists() or not filecmp.cmp(path, checked_in, shallow=False):
                stale.append(str(relative))
        return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="fail when the checked-in stubs differ from the protos")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_stubs()
        for name in stale:
            print(f"stale: {name}", file=sys.stderr)
        return 1 if stale else 0
    for path in generate(REPO_ROOT):
        print(path.relative_to(REPO_ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
