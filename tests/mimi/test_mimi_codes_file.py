import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from services.mimi.codes_file import CodesFileError, load_codes, save_codes


def test_round_trip_keeps_codes_and_metadata(tmp_path):
    codes = torch.randint(0, 2048, (8, 13))
    path = tmp_path / "c.safetensors"
    save_codes(path, codes, num_samples=12 * 1920 + 5, model="mimi-x")
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"sample_rate": "24000", "frame_rate": "12.5",
                                "num_codebooks": "8", "num_samples": "23045", "model": "mimi-x"}
        assert f.get_tensor("codes").dtype == torch.int16
    loaded = load_codes(path)
    assert torch.equal(loaded.codes, codes) and loaded.codes.dtype == torch.long
    assert (loaded.num_codebooks, loaded.num_frames, loaded.frame_size) == (8, 13, 1920)
    assert (loaded.num_samples, loaded.model) == (23045, "mimi-x")


def test_any_integer_type_is_read(tmp_path):
    path = tmp_path / "c.safetensors"
    meta = {"sample_rate": "24000", "frame_rate": "12.5", "num_codebooks": "2",
            "num_samples": "3840", "model": "m"}
    save_file({"codes": torch.tensor([[1, 2], [3, 4]], dtype=torch.int64)}, path, metadata=meta)
    assert load_codes(path).codes.tolist() == [[1, 2], [3, 4]]


@pytest.mark.parametrize("tensors, meta, message", [
    ({"x": torch.zeros(2, 2, dtype=torch.long)}, None, "no tensor 'codes'"),
    ({"codes": torch.zeros(2, 2)}, {"sample_rate": "24000", "frame_rate": "12.5",
                                    "num_codebooks": "2", "num_samples": "3840", "model": "m"},
     "must be integers"),
    ({"codes": torch.zeros(2, 2, dtype=torch.long)}, {
        "sample_rate": "24000", "frame_rate": "12.5", "num_codebooks": "3",
        "num_samples": "3840", "model": "m"}, "says 3 codebooks"),
    ({"codes": torch.zeros(2, 2, dtype=torch.long)}, {
        "sample_rate": "24000", "frame_rate": "12.5", "num_codebooks": "2",
        "num_samples": "9999", "model": "m"}, "needs 6 frames"),
])
def test_bad_files_are_clear_errors(tmp_path, tensors, meta, message):
    path = tmp_path / "bad.safetensors"
    save_file(tensors, path, metadata=meta)
    with pytest.raises(CodesFileError, match=message):
        load_codes(path)


def test_not_a_safetensors_file(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(b"RIFF....WAVE")
    with pytest.raises(CodesFileError, match="cannot read codes file"):
        load_codes(path)


def test_only_the_codes_are_required(tmp_path):
    path = tmp_path / "bare.safetensors"
    save_file({"codes": torch.ones(3, 4, dtype=torch.int16)}, path,
              metadata={"sample_rate": "24000"})
    loaded = load_codes(path)
    assert loaded.defaulted == ("frame_rate", "num_codebooks", "num_samples", "model")
    assert (loaded.num_samples, loaded.model, loaded.frame_rate) == (4 * 1920, "unknown", 12.5)
    save_file({"codes": torch.ones(3, 4, dtype=torch.int16)}, path)  # no metadata at all
    assert load_codes(path).defaulted == ("sample_rate", "frame_rate", "num_codebooks",
                                          "num_samples", "model")


def test_codes_files_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        save_codes(tmp_path / "c.safetensors", torch.zeros(1, 1, dtype=torch.long), 1920, "m")
    finally:
        os.umask(old)
    assert oct((tmp_path / "c.safetensors").stat().st_mode & 0o777) == "0o644"
