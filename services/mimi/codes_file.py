"""The codes file: one recording's Mimi codes, written by ``mimi encode`` and read by ``mimi
decode`` (and by any command or service that exchanges codes as files).

A safetensors file holding one integer tensor ``codes`` [K, T] (codebooks x frames) and header
metadata strings:

    sample_rate    "24000"   rate of the audio the codes stand for
    frame_rate     "12.5"    code frames per second
    num_codebooks  "8"       K, repeated so tools can read it without loading the tensor
    num_samples    "96000"   the original length: decode trims its whole frames to it
    model          "tokenizer-e351c8d8-checkpoint125.safetensors"  the codec that made them

Only ``codes`` is required: missing metadata takes defaults (``sample_rate`` 24000,
``frame_rate`` 12.5, ``num_codebooks`` from the tensor, ``num_samples`` = frames x frame size,
``model`` "unknown"), and ``CodesFile.defaulted`` names the keys that did, so a tool can say so.

Codes are stored as int16 (Mimi's 2048-entry codebooks fit, at a quarter of int64's size) and
read back as int64 whatever integer type a writer chose.
"""

from __future__ import annotations

import dataclasses
import math
import os

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from services.core.constants import FRAME_RATE, SAMPLE_RATE

CODES_KEY = "codes"
METADATA_KEYS = ("sample_rate", "frame_rate", "num_codebooks", "num_samples", "model")
UNKNOWN_MODEL = "unknown"


class CodesFileError(ValueError):
    """A codes file that cannot be read or does not follow the format."""


@dataclasses.dataclass(frozen=True)
class CodesFile:
    codes: torch.Tensor  # [K, T] int64
    num_samples: int
    model: str
    sample_rate: int = SAMPLE_RATE
    frame_rate: float = FRAME_RATE
    defaulted: tuple[str, ...] = ()  # metadata keys the file lacked (defaults used)

    @property
    def num_codebooks(self) -> int:
        return self.codes.shape[0]

    @property
    def num_frames(self) -> int:
        return self.codes.shape[1]

    @property
    def frame_size(self) -> int:
        return round(self.sample_rate / self.frame_rate)


def save_codes(path: str | os.PathLike, codes: torch.Tensor, num_samples: int, model: str,
               sample_rate: int = SAMPLE_RATE, frame_rate: float = FRAME_RATE) -> None:
    """Writes codes [K, T] (any integer dtype, values in int16 range)."""
    _check_codes(codes, num_samples, round(sample_rate / frame_rate))
    if codes.numel() and (codes.min() < -(2**15) or codes.max() >= 2**15):
        raise CodesFileError("codes do not fit the file's int16 storage")
    metadata = {"sample_rate": str(sample_rate), "frame_rate": str(frame_rate),
                "num_codebooks": str(codes.shape[0]), "num_samples": str(num_samples),
                "model": model}
    write_safetensors(path, {CODES_KEY: codes.detach().to("cpu", torch.int16).contiguous()},
                      metadata)


def write_safetensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                      metadata: dict[str, str]) -> None:
    """A safetensors file with the usual permissions (0644 under the default umask):
    safetensors' own writer creates its files 0600."""
    data = save(tensors, metadata=metadata)
    with open(path, "wb") as f:
        f.write(data)


def load_codes(path: str | os.PathLike) -> CodesFile:
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            if CODES_KEY not in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                raise CodesFileError(f"{path}: no tensor {CODES_KEY!r} (not a codes file)")
            codes = f.get_tensor(CODES_KEY)
    except (SafetensorError, OSError) as e:
        raise CodesFileError(f"cannot read codes file {path}: {e}") from e
    if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
        raise CodesFileError(f"{path}: codes must be integers, got {codes.dtype}")
    if codes.dim() != 2:
        _check_codes(codes, 0, 1)  # says what the shape should be
    missing = tuple(k for k in METADATA_KEYS if k not in metadata)
    try:
        sample_rate = int(metadata.get("sample_rate", SAMPLE_RATE))
        frame_rate = float(metadata.get("frame_rate", FRAME_RATE))
        frame_size = round(sample_rate / frame_rate)
        result = CodesFile(
            codes=codes.long(),
            num_samples=int(metadata.get("num_samples", codes.shape[1] * frame_size)),
            model=metadata.get("model", UNKNOWN_MODEL), sample_rate=sample_rate,
            frame_rate=frame_rate, defaulted=missing)
        declared = int(metadata.get("num_codebooks", codes.shape[0]))
    except (ValueError, ZeroDivisionError) as e:
        raise CodesFileError(f"{path}: malformed metadata: {e}") from e
    if declared != codes.shape[0]:
        raise CodesFileError(f"{path}: metadata says {declared} codebooks, tensor has "
                             f"{codes.shape[0]}")
    _check_codes(codes, result.num_samples, result.frame_size)
    return result


def _check_codes(codes: torch.Tensor, num_samples: int, frame_size: int) -> None:
    if codes.dim() != 2:
        raise CodesFileError(f"codes must be [num_codebooks, num_frames], got shape "
                             f"{tuple(codes.shape)}")
    frames = math.ceil(num_samples / frame_size)
    if num_samples < 0 or frames != codes.shape[1]:
        raise CodesFileError(f"num_samples {num_samples} needs {frames} frames of {frame_size} "
                             f"samples, the codes have {codes.shape[1]}")
