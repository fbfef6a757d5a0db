"""Audio files and sample-rate conversion. Everything inside the models is float32 mono at
24 kHz; conversion happens once, at the edge."""

from __future__ import annotations

import os

import numpy as np
import soundfile
import soxr

from services.core.constants import SAMPLE_RATE


def to_mono(audio: np.ndarray) -> np.ndarray:
    """[N] or [N, channels] -> [N] float32, channels averaged."""
    audio = np.asarray(audio, dtype=np.float32)
    return audio.mean(axis=1) if audio.ndim == 2 else audio


def resample(audio: np.ndarray, source_rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling of a whole mono signal (libsoxr, high quality)."""
    if source_rate <= 0 or target_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {source_rate} -> {target_rate}")
    if source_rate == target_rate:
        return np.asarray(audio, dtype=np.float32)
    return soxr.resample(np.asarray(audio, dtype=np.float32), source_rate, target_rate,
                         quality="HQ").astype(np.float32, copy=False)


class StreamResampler:
    """Chunk-by-chunk resampling for streams; ``flush`` returns what the filter still holds."""

    def __init__(self, source_rate: int, target_rate: int = SAMPLE_RATE):
        if source_rate <= 0 or target_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {source_rate} -> {target_rate}")
        self.identity = source_rate == target_rate
        self._stream = None if self.identity else soxr.ResampleStream(
            source_rate, target_rate, 1, dtype="float32", quality="HQ")

    def process(self, chunk: np.ndarray, last: bool = False) -> np.ndarray:
        chunk = np.asarray(chunk, dtype=np.float32)
        if self.identity:
            return chunk
        return self._stream.resample_chunk(chunk, last=last)

    def flush(self) -> np.ndarray:
        return self.process(np.zeros(0, dtype=np.float32), last=True)


def read_audio(path: str | os.PathLike, target_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, int]:
    """Reads any file soundfile reads -> (float32 mono at ``target_rate``, original rate)."""
    audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    return resample(to_mono(audio), rate, target_rate), rate


def write_wav(path: str | os.PathLike, audio: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    soundfile.write(str(path), np.asarray(audio, dtype=np.float32), rate, subtype="PCM_16")
