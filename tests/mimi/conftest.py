import pytest
import torch

from services.mimi import MimiModel, load_mimi
from tests.conftest import FIXTURES, load_golden

GOLDEN = ["mimi_dev_k8", "mimi_dev_k16"]


@pytest.fixture(scope="session")
def dev_mimi() -> MimiModel:
    """Kyutai's small random Mimi of the golden files, loaded through the real loader."""
    return load_mimi(FIXTURES / "mimi_dev.safetensors", num_codebooks=16)


@pytest.fixture(scope="session", params=GOLDEN)
def golden(request) -> dict[str, torch.Tensor]:
    return load_golden(request.param)
