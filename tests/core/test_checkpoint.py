import pytest
import torch
from torch import nn

from services.core.checkpoint import (
    CheckpointError,
    build_on_meta,
    load_into,
    load_state_dict,
    resolve_file,
    save_state_dict,
)


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2, bias=False))


def test_round_trip_on_meta_device(tmp_path):
    source = _model()
    path = tmp_path / "m.safetensors"
    save_state_dict(source, path)
    model = load_into(build_on_meta(_model), load_state_dict(path), str(path))
    assert all(p.device.type == "cpu" for p in model.parameters())
    for a, b in zip(model.state_dict().values(), source.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


def test_dtype_cast_keeps_selected_keys(tmp_path):
    path = tmp_path / "m.safetensors"
    save_state_dict(_model(), path)
    state = load_state_dict(path, dtype=torch.bfloat16, keep_dtype=lambda k: k.startswith("1."))
    assert state["0.weight"].dtype == torch.bfloat16
    assert state["1.weight"].dtype == torch.float32


def test_mismatch_names_every_difference(tmp_path):
    wrong = nn.Sequential(nn.Linear(4, 5), nn.Linear(3, 2, bias=True))
    path = tmp_path / "wrong.safetensors"
    save_state_dict(wrong, path)
    with pytest.raises(CheckpointError) as err:
        load_into(build_on_meta(_model), load_state_dict(path), str(path))
    message = str(err.value)
    assert "1 unexpected keys: 1.bias" in message
    assert "0.weight: checkpoint (5, 4), model (3, 4)" in message
    assert "0.bias: checkpoint (5,), model (3,)" in message


def test_truncated_file_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "m.safetensors"
    save_state_dict(_model(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot read"):
        load_state_dict(path)


def test_resolve_file(tmp_path):
    (tmp_path / "a.safetensors").write_bytes(b"x")
    assert resolve_file("a.safetensors", tmp_path) == tmp_path / "a.safetensors"
    assert resolve_file("ignored", tmp_path / "a.safetensors") == tmp_path / "a.safetensors"
    with pytest.raises(FileNotFoundError):
        resolve_file("b.safetensors", tmp_path)
    with pytest.raises(ValueError):
        resolve_file("b.safetensors")
