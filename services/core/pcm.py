"""PCM bytes on the wire <-> float32 samples, validated at the service edge, and the framing
that turns chunks of any size into whole 80 ms frames."""

from __future__ import annotations

import numpy as np

from services.core.audio import StreamResampler
from services.core.common_pb2 import PCM_F32LE, PCM_S16LE, AudioEncoding
from services.core.constants import FRAME_SIZE
from services.core.limits import MAX_CHUNK_SECONDS
from services.core.validation import check_samples

MIN_SAMPLE_RATE = 1_000  # Hz; below this no speech survives
MAX_SAMPLE_RATE = 384_000  # Hz; the highest rate audio interfaces offer

_DTYPES = {PCM_S16LE: np.dtype("<i2"), PCM_F32LE: np.dtype("<f4")}
_S16_SCALE = 32768.0


class PcmError(ValueError):
    """Audio or audio config a client sent that cannot be used (INVALID_ARGUMENT)."""


def check_encoding(encoding: int) -> int:
    if encoding not in _DTYPES:
        name = (AudioEncoding.Name(encoding) if encoding in AudioEncoding.values()
                else str(encoding))
        raise PcmError(f"unsupported audio encoding {name}; use PCM_S16LE or PCM_F32LE")
    return encoding


def check_sample_rate(rate: int) -> int:
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise PcmError(f"sample_rate_hertz must be in {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE}, "
                       f"got {rate}")
    return rate


def sample_bytes(encoding: int) -> int:
    """Bytes per sample on the wire."""
    return _DTYPES[check_encoding(encoding)].itemsize


def decode_pcm(data: bytes, encoding: int) -> np.ndarray:
    """Wire bytes -> float32 samples, nominally in [-1, 1] (f32 is passed through, but must
    pass ``validation.check_samples``: finite, not far beyond full scale)."""
    dtype = _DTYPES[check_encoding(encoding)]
    if len(data) % dtype.itemsize:
        raise PcmError(f"{AudioEncoding.Name(encoding)} audio needs a multiple of "
                       f"{dtype.itemsize} bytes, got {len(data)}")
    samples = np.frombuffer(data, dtype=dtype)
    if encoding == PCM_S16LE:
        return samples.astype(np.float32) / _S16_SCALE
    return check_samples(samples.astype(np.float32))


def encode_pcm(audio: np.ndarray, encoding: int) -> bytes:
    """float32 samples -> wire bytes; s16 clips to full scale."""
    audio = np.asarray(audio, dtype=np.float32)
    if check_encoding(encoding) == PCM_S16LE:
        scaled = np.clip(np.round(audio * _S16_SCALE), -_S16_SCALE, _S16_SCALE - 1)
        return scaled.astype("<i2").tobytes()
    return audio.astype("<f4").tobytes()


class FrameSplitter:
    """Client audio chunks at any rate -> whole frames of 24 kHz samples.

    ``push`` returns the frames completed so far ([n, frame_size]); ``flush`` drains the
    resampler and zero-pads the last partial frame, so a stream yields ceil(samples / 1920)
    frames, as a batch encode of the same audio does.
    """

    def __init__(self, encoding: int, sample_rate: int, frame_size: int = FRAME_SIZE,
                 max_chunk_seconds: float = MAX_CHUNK_SECONDS):
        self.encoding = check_encoding(encoding)
        self.sample_rate = check_sample_rate(sample_rate)
        self.frame_size = frame_size
        self.max_chunk_seconds = max_chunk_seconds
        self._resampler = StreamResampler(sample_rate)
        self._pending = np.zeros(0, dtype=np.float32)
        self.samples_received = 0  # at the input rate

    @property
    def seconds_received(self) -> float:
        return self.samples_received / self.sample_rate

    def push(self, data: bytes) -> np.ndarray:
        seconds = len(data) / sample_bytes(self.encoding) / self.sample_rate
        if seconds > self.max_chunk_seconds:  # checked before decoding and resampling it
            raise PcmError(f"an audio message of {seconds:.1f} s: at most "
                           f"{self.max_chunk_seconds:g} s per message, send shorter chunks")
        audio = decode_pcm(data, self.encoding)
        self.samples_received += len(audio)
        return self._frames(self._resampler.process(audio))

    def flush(self) -> np.ndarray:
        tail = self._resampler.flush()
        frames = self._frames(tail)
        if len(self._pending) == 0:
            return frames
        last = np.zeros((1, self.frame_size), dtype=np.float32)
        last[0, : len(self._pending)] = self._pending
        self._pending = self._pending[:0]
        return np.concatenate([frames, last])

    def pad(self, samples: int) -> np.ndarray:
        """Frames completed by ``samples`` zeros added after the audio so far, at 24 kHz (not
        counted as received: a recogniser's silence prefix)."""
        return self._frames(np.zeros(samples, dtype=np.float32))

    def flush_dropping_partial(self, silence: int = 0) -> np.ndarray:
        """The end of the stream framed as a recogniser frames a clip: the resampler drained,
        ``silence`` zeros (24 kHz) appended, a partial last frame dropped."""
        tail = np.concatenate([self._resampler.flush(), np.zeros(silence, np.float32)])
        frames = self._frames(tail)
        self._pending = self._pending[:0]
        return frames

    def _frames(self, audio: np.ndarray) -> np.ndarray:
        pending = np.concatenate([self._pending, audio])
        whole = len(pending) // self.frame_size * self.frame_size
        self._pending = pending[whole:]
        return pending[:whole].reshape(-1, self.frame_size)
