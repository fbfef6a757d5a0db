"""Where ASR text sits in time relative to the audio (docs/architecture.md §3.1-3.2).

The recogniser's text stream lags the audio by ``audio_delay`` seconds (0.5 s for
stt-1b-en_fr, 2.5 s for stt-2.6b-en; for a plain Moshi-architecture model, its text delay in
frames / 12.5). The audio is framed as the reference does it:

    input     |prefix zeros|  speech ...............  |delay + 1 s of zeros|
    frames     0    1    2  ...                        ...   n-1   (a partial last frame is dropped)
    LM calls   0    1    2    3  ...      frame 0 is fed at call 0 (where the model ignores
                                          its input) and again at call 1; frame j at call j+1
    text       token of call t  ->  audio time  t / 12.5 - prefix - delay   (clamped at 0)

At the end of input the zeros after the speech (the "flush") let the last words come out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from services.core.constants import FRAME_RATE, FRAME_SIZE, SAMPLE_RATE

FLUSH_EXTRA_SECONDS = 1.0  # silence fed past the text delay at the end of input


@dataclasses.dataclass(frozen=True)
class SttTiming:
    audio_delay_seconds: float  # how far the text lags the audio
    silence_prefix_seconds: float = 0.0  # zeros fed before the audio

    @classmethod
    def from_config(cls, config: Mapping) -> SttTiming:
        """From a Kyutai config.json with an ``stt_config`` group."""
        stt = config.get("stt_config")
        if stt is None:
            raise ValueError("the model config has no stt_config; give the text delay in frames")
        return cls(float(stt["audio_delay_seconds"]),
                   float(stt.get("audio_silence_prefix_seconds", 0.0)))

    @classmethod
    def from_text_delay_frames(cls, frames: int) -> SttTiming:
        """For a Moshi-architecture model whose text is delayed ``frames`` steps."""
        return cls(frames / FRAME_RATE)

    @property
    def offset_seconds(self) -> float:
        """Subtracted from a text step's time (step / 12.5) to get the audio time."""
        return self.silence_prefix_seconds + self.audio_delay_seconds

    @property
    def prefix_samples(self) -> int:
        return round(self.silence_prefix_seconds * SAMPLE_RATE)

    @property
    def flush_samples(self) -> int:
        """Zeros appended at the end of input so the last words come out."""
        return round((self.audio_delay_seconds + FLUSH_EXTRA_SECONDS) * SAMPLE_RATE)

    def flush_frames(self, buffered_samples: int) -> int:
        """Frames still to feed at the end of input when ``buffered_samples`` (< one frame) of
        audio wait in the buffer: the buffer plus the flush zeros, a partial frame dropped."""
        return (buffered_samples + self.flush_samples) // FRAME_SIZE

    def audio_time(self, step: int) -> float:
        """Audio time (s) of the text emitted at LM call ``step``."""
        return max(0.0, step / FRAME_RATE - self.offset_seconds)
