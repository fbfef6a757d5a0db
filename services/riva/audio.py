"""Riva's audio conventions -> ours: which PCM layout and rate a Riva client's audio has, from
its config or from the WAV header at the start of the audio (Riva's file scripts and Pipecat's
segmented STT send whole WAV files with ``encoding`` 0 and ``sample_rate_hertz`` 0), and
interleaved channels mixed down to the mono our recognisers hear.
"""

from __future__ import annotations

import dataclasses
import struct

from services.core.audio import to_mono
from services.core.common_pb2 import PCM_F32LE, PCM_S16LE
from services.core.engine import InvalidInput
from services.core.pcm import decode_pcm, encode_pcm, sample_bytes
from services.riva import riva_audio_pb2

# What a Riva client means by raw audio without a rate: LiveKit and Pipecat send 16 kHz.
DEFAULT_SAMPLE_RATE = 16_000
# A WAV header is found within this many bytes (RIFF + fmt + a few metadata chunks) or never.
MAX_HEADER_BYTES = 1 << 16
MAX_CHANNELS = 8
_WAV_FORMATS = {(1, 16): PCM_S16LE, (3, 32): PCM_F32LE}  # (format tag, bits) -> ours
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE


@dataclasses.dataclass(frozen=True)
class AudioFormat:
    encoding: int  # ours: PCM_S16LE or PCM_F32LE
    sample_rate: int  # Hz
    channels: int

    @property
    def frame_bytes(self) -> int:
        return sample_bytes(self.encoding) * self.channels


def config_format(encoding: int, sample_rate: int, channels: int) -> AudioFormat:
    """The format a Riva config states (no header seen); InvalidInput for what we cannot
    decode."""
    if encoding not in (riva_audio_pb2.ENCODING_UNSPECIFIED, riva_audio_pb2.LINEAR_PCM):
        name = riva_audio_pb2.AudioEncoding.Name(encoding) \
            if encoding in riva_audio_pb2.AudioEncoding.values() else str(encoding)
        raise InvalidInput(f"unsupported audio encoding {name}; send LINEAR_PCM (16-bit PCM) "
                           "or a WAV file")
    return AudioFormat(PCM_S16LE, sample_rate or DEFAULT_SAMPLE_RATE,
                       _check_channels(channels or 1))


def _check_channels(channels: int) -> int:
    if not 1 <= channels <= MAX_CHANNELS:
        raise InvalidInput(f"audio_channel_count must be in 1..{MAX_CHANNELS}, got {channels}")
    return channels


def looks_like_wav(data: bytes) -> bool:
    """``data`` starts like a RIFF/WAVE file (as far as it goes)."""
    head = data[:12]
    return b"RIFF".startswith(head[:4]) and (len(head) <= 8 or b"WAVE".startswith(head[8:]))


def parse_wav_header(data: bytes) -> tuple[AudioFormat, int] | None:
    """(format, offset of the first sample) of a WAV file starting ``data``; None while the
    header is incomplete; InvalidInput for a WAV we cannot decode.

        "RIFF" size "WAVE" | "fmt " size tag channels rate ... bits | ... | "data" size samples
    """
    offset, fmt = 12, None
    while offset + 8 <= len(data):
        chunk_id, size = data[offset:offset + 4], struct.unpack_from("<I", data, offset + 4)[0]
        body = offset + 8
        if chunk_id == b"data":
            if fmt is None:
                raise InvalidInput("WAV file without a fmt chunk before its data")
            return fmt, body
        if chunk_id == b"fmt ":
            if body + 16 > len(data):
                return None
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", data, body)
            if tag == _WAVE_FORMAT_EXTENSIBLE and body + 26 <= len(data):
                tag = struct.unpack_from("<H", data, body + 24)[0]  # the sub-format's tag
            if (tag, bits) not in _WAV_FORMATS:
                raise InvalidInput(f"unsupported WAV format (tag {tag}, {bits} bits): send "
                                   "16-bit PCM or 32-bit float")
            if rate == 0:
                raise InvalidInput("WAV header with a sample rate of 0")
            fmt = AudioFormat(_WAV_FORMATS[tag, bits], rate, _check_channels(channels))
        offset = body + size + (size & 1)  # chunks are padded to even sizes
    if len(data) > MAX_HEADER_BYTES:
        raise InvalidInput(f"no WAV data chunk within the first {MAX_HEADER_BYTES} bytes")
    return None


class Downmix:
    """Interleaved multi-channel chunks -> mono float32 bytes (PCM_F32LE), a partial sample
    frame carried over to the next chunk. Mono passes through untouched."""

    def __init__(self, fmt: AudioFormat):
        self.fmt = fmt
        self._rest = b""

    @property
    def encoding(self) -> int:
        """Our encoding of what ``push`` returns."""
        return self.fmt.encoding if self.fmt.channels == 1 else PCM_F32LE

    def push(self, data: bytes) -> bytes:
        if self.fmt.channels == 1:
            return data
        data = self._rest + data
        whole = len(data) // self.fmt.frame_bytes * self.fmt.frame_bytes
        data, self._rest = data[:whole], data[whole:]
        samples = decode_pcm(data, self.fmt.encoding).reshape(-1, self.fmt.channels)
        return encode_pcm(to_mono(samples), PCM_F32LE)
