"""Shared by every test: the fixtures folder, its golden files, and one torch thread."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a loaded 2-core machine the
    thread hand-offs cost a scheduler slice per op (~80x slower steps measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def load_golden(name: str) -> dict[str, torch.Tensor]:
    """The arrays of the golden file ``name``.npz as tensors (its "meta" left out)."""
    with np.load(FIXTURES / f"{name}.npz") as data:
        return {k: torch.from_numpy(data[k]) for k in data.files if k != "meta"}


def golden_checkpoint(folder: Path, name: str) -> str:
    """The golden LM checkpoint ``name`` laid out as Kyutai ships one, in ``folder``/``name``:
    config.json + model.safetensors."""
    folder = folder / name
    folder.mkdir()
    shutil.copy(FIXTURES / f"{name}.safetensors", folder / "model.safetensors")
    config = json.loads((FIXTURES / f"{name}.json").read_text())["config"]
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)
