"""`moshi-services mimi encode/decode` end to end through click's CliRunner."""

from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from click.testing import CliRunner

import cli.mimi
from cli.main import main
from services.builtin import builtin_mimi
from services.mimi.codes_file import load_codes
from tests.conftest import FIXTURES

DEV = FIXTURES / "mimi_dev.safetensors"


def _tone(path: Path, rate: int, seconds: float, channels: int) -> None:
    t = np.arange(int(rate * seconds)) / rate
    audio = np.stack([0.3 * np.sin(2 * np.pi * (220 + 110 * c) * t) for c in range(channels)], 1)
    soundfile.write(path, audio, rate)


@pytest.mark.parametrize("rate, channels, extension, model_args", [
    (16_000, 2, "wav", []),  # stereo, resampled, built-in random model
    (48_000, 1, "flac", ["--checkpoint", str(DEV)]),
])
def test_round_trip(tmp_path, rate, channels, extension, model_args):
    source = tmp_path / f"in.{extension}"
    _tone(source, rate, 2.3, channels)
    codes_path, out = tmp_path / "codes.safetensors", tmp_path / "out.wav"
    runner = CliRunner()
    result = runner.invoke(main, ["mimi", "encode", str(source), str(codes_path),
                                  "--num-codebooks", "6", *model_args])
    assert result.exit_code == 0, result.output
    assert ("output is fake" in result.stderr) == (not model_args)
    codes = load_codes(codes_path)
    assert codes.codes.shape == (6, 29)  # ceil(2.3 s * 12.5)
    assert codes.num_samples == 55_200 and codes.sample_rate == 24_000
    result = runner.invoke(main, ["mimi", "decode", str(codes_path), str(out), *model_args])
    assert result.exit_code == 0, result.output
    audio, out_rate = soundfile.read(out)
    assert out_rate == 24_000 and audio.shape == (55_200,)
    assert np.abs(audio).max() > 0


def test_clear_errors(tmp_path):
    source = tmp_path / "in.wav"
    _tone(source, 24_000, 0.5, 1)
    runner = CliRunner()
    result = runner.invoke(main, ["mimi", "encode", str(source), str(tmp_path / "c.st"),
                                  "--checkpoint", str(DEV), "-k", "20"])
    assert result.exit_code == 2 and "this model has 16 codebooks" in result.output
    result = runner.invoke(main, ["mimi", "decode", str(source), str(tmp_path / "o.wav")])
    assert result.exit_code == 1 and "cannot read codes file" in result.output
    result = runner.invoke(main, ["mimi", "encode", str(source), str(tmp_path / "c.st"),
                                  "--checkpoint", str(tmp_path)])
    assert result.exit_code == 1 and "no Mimi checkpoint" in result.output


def test_long_files_show_progress_and_match_the_batch_codes(tmp_path, monkeypatch):
    monkeypatch.setattr(cli.mimi, "PROGRESS_FRAMES", 5)  # 2.3 s = 29 frames -> 6 pieces
    source, codes_path = tmp_path / "in.wav", tmp_path / "codes.safetensors"
    _tone(source, 24_000, 2.3, 1)
    runner = CliRunner()
    result = runner.invoke(main, ["mimi", "encode", str(source), str(codes_path)])
    assert result.exit_code == 0, result.output
    assert "encoding" in result.stderr
    audio, _ = soundfile.read(source, dtype="float32")
    expected = builtin_mimi().encode(
        torch.from_numpy(audio)[None, None])[0]
    assert torch.equal(load_codes(codes_path).codes, expected)
    result = runner.invoke(main, ["mimi", "decode", str(codes_path), str(tmp_path / "o.wav")])
    assert result.exit_code == 0 and "decoding" in result.stderr
