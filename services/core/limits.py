"""How much work one request may ask of the server.

A request is small on the wire but may ask for a great deal of work: a 30-byte
``<break time="99999999s"/>`` holds a slot for days, 250 KB of Mimi codes decode to a
reply far over the message limit, 1 MiB of 1 kHz audio is 524 s of audio at 24 kHz. Each
such request is refused *before* the work starts, with INVALID_ARGUMENT and the limit in the
message. The limits live in the services' session layer (``TTSService``, ``MimiService``,
``FrameSplitter``), so every protocol adapter over them gets the same ones.

Defaults fit the models' own bounds: a synthesis session stops after 30 000 steps (40 min, about
35 000 characters of speech), and a unary reply must fit gRPC's 4 MiB message (87 s of s16
audio at 24 kHz). ``serve`` sets them with ``--max-text-chars``, ``--max-break-seconds`` and
``--max-unary-audio-seconds``.
"""

from __future__ import annotations

import dataclasses

MiB = 1 << 20
# The server's message limit (ServerOptions.max_message_bytes), less room for the reply's
# other fields: a unary reply whose audio is larger cannot be sent.
MAX_REPLY_AUDIO_BYTES = 4 * MiB - 64 * 1024
# The longest audio one message may carry, at 24 kHz after resampling: any 4 MiB message of
# 24 kHz s16 (87 s) fits, while 4 MiB at 1 kHz (35 min, 200 MB once resampled) does not. It
# also bounds a unary Recognize, whose clip is one message.
MAX_CHUNK_SECONDS = 120.0


@dataclasses.dataclass(frozen=True)
class RequestLimits:
    """Per-request bounds; a request beyond one is refused at once (INVALID_ARGUMENT)."""

    max_text_chars: int = 50_000  # TTS: text of one request (a Synthesize, or a whole stream)
    max_break_seconds: float = 10.0  # TTS: the longest <break time="..."/>
    max_unary_audio_seconds: float = 120.0  # Mimi Encode / Decode: audio in or out of a call
    max_chunk_seconds: float = MAX_CHUNK_SECONDS  # one audio message (Mimi streams)
    voice_cache_size: int = 16  # TTS: voice files kept loaded (least recently used dropped)
    max_reply_audio_bytes: int = MAX_REPLY_AUDIO_BYTES  # unary replies' audio

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            if not getattr(self, field.name) > 0:
                raise ValueError(f"{field.name} must be positive, got "
                                 f"{getattr(self, field.name)}")
