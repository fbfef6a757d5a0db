"""The virtual environment the Riva client tests run ``nvidia-riva-client`` in.

nvidia-riva-client 2.27.0 pins ``protobuf==6.33.5``, which this project's protobuf 7 excludes,
so it lives in a plain venv of its own (not ``--system-site-packages``: our protobuf would
shadow its pin either way), installed ``--no-deps`` next to the grpcio and protobuf it runs
with here and nothing else (its library imports only those two). Built once, cached under
``~/.cache/moshi-services-test/`` (``MOSHI_SERVICES_TEST_CACHE`` moves it); the test fixture
and ``.ci/run`` (``python3 -m tests.riva.client_venv``) both build it when missing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

RIVA_CLIENT = "nvidia-riva-client==2.27.0"
RUNTIME = ("grpcio==1.85.1", "protobuf==7.36.2")
SPEC = " ".join((RIVA_CLIENT, *RUNTIME))  # written into the venv: a changed pin rebuilds it


class VenvError(RuntimeError):
    """The client venv cannot be built (no network to PyPI, no venv module, ...)."""


def cache_dir() -> Path:
    root = os.environ.get("MOSHI_SERVICES_TEST_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "moshi-services-test"


def venv_python(root: Path | None = None) -> Path:
    return (root or cache_dir() / "riva-client-venv") / "bin" / "python"


def ensure_venv(root: Path | None = None) -> Path:
    """The venv's python, built first if missing or built for another spec; VenvError when
    it cannot be built."""
    root = root or cache_dir() / "riva-client-venv"
    python, stamp = venv_python(root), root / "moshi-services-spec.txt"
    if python.exists() and stamp.exists() and stamp.read_text() == SPEC:
        return python
    try:
        venv.EnvBuilder(clear=True, with_pip=True).create(root)
        for packages, flags in (((RIVA_CLIENT,), ["--no-deps"]), (RUNTIME, [])):
            subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                            "--disable-pip-version-check", *flags, *packages],
                           check=True, capture_output=True, text=True, timeout=900)
        subprocess.run([str(python), "-c", "import riva.client"], check=True,
                       capture_output=True, text=True, timeout=120)
    except subprocess.CalledProcessError as error:
        raise VenvError(f"building the nvidia-riva-client venv in {root} failed: "
                        f"{' '.join(error.cmd)}\n{error.stdout}{error.stderr}") from None
    except OSError as error:
        raise VenvError(f"building the nvidia-riva-client venv in {root} failed: "
                        f"{error}") from None
    stamp.write_text(SPEC)
    return python


if __name__ == "__main__":
    print(ensure_venv())
    sys.exit(0)
