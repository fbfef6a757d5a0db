from pathlib import Path

import numpy as np
import pytest
import torch

from services.mimi import MimiModel, load_mimi

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
GOLDEN = ["mimi_dev_k8.npz", "mimi_dev_k16.npz"]


@pytest.fixture(scope="session")
def dev_mimi() -> MimiModel:
    """Kyutai's small random Mimi of the golden files, loaded through the real loader."""
    return load_mimi(FIXTURES / "mimi_dev.safetensors", num_codebooks=16)


@pytest.fixture(scope="session", params=GOLDEN)
def golden(request) -> dict[str, torch.Tensor]:
    with np.load(FIXTURES / request.param) as data:
        return {k: torch.from_numpy(data[k]) for k in data.files if k != "meta"}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from threads, and on a shared machine every parallel op can
    wait a scheduler slice for a descheduled worker: one thread keeps these tests fast."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
