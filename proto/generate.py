"""Generate the Python gRPC stubs for proto/ into a flat package directory.

`make proto` writes them to services/tapedeck/_proto; the staleness test writes them to a
temporary directory and compares. Imports are rewritten so the stubs live inside `tapedeck`.
"""

import re
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent
# grpcio-tools' stubs check the grpc version with a private helper (`grpc._utilities`); the
# project reads no private attribute of grpc, so the same check is written with public API.
_PRIVATE_VERSION_CHECK = (
    "try:\n"
    "    from grpc._utilities import first_version_is_lower\n"
    "    _version_not_supported = first_version_is_lower(GRPC_VERSION, GRPC_GENERATED_VERSION)\n"
    "except ImportError:\n"
    "    _version_not_supported = True\n"
)
_PUBLIC_VERSION_CHECK = (
    "_version_not_supported = [int(p) for p in GRPC_VERSION.split('.')[:3] if p.isdigit()] < [\n"
    "    int(p) for p in GRPC_GENERATED_VERSION.split('.')\n"
    "]\n"
)
PROTOS = ["tapedeck/v1/storage.proto"]
PACKAGE = "tapedeck._proto"


def generate(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{ROOT}",
            f"--python_out={tmp}",
            f"--grpc_python_out={tmp}",
            f"--plugin=protoc-gen-mypy={Path(sys.executable).parent / 'protoc-gen-mypy'}",
            f"--mypy_out={tmp}",
            *(str(ROOT / p) for p in PROTOS),
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        for path in sorted(Path(tmp).rglob("*.py*")):
            text = re.sub(
                r"^from tapedeck\.v1 import", f"from {PACKAGE} import", path.read_text(), flags=re.M
            ).replace(_PRIVATE_VERSION_CHECK, _PUBLIC_VERSION_CHECK)
            (out_dir / path.name).write_text(text)
    (out_dir / "__init__.py").write_text(
        '"""Generated gRPC stubs: run `make proto`, do not edit."""\n'
    )


if __name__ == "__main__":
    generate(Path(sys.argv[1]))
