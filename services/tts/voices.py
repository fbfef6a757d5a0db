"""The voices a TTS server loads on request, by name, from its voices folder.

A name is looked up once per *file*: ``dev/voice``, ``./dev/voice.safetensors`` and
``dev//./voice`` resolve to the same file and share one loaded copy. The cache is bounded
(least recently used voices are dropped), keyed by the resolved path with the file's size and
modification time (a replaced file is loaded again), and only voices the model accepted are
kept: the caller checks a voice before ``keep``. Errors name the voice as the client wrote it,
never the server's paths.
"""

from __future__ import annotations

import collections
import os
from pathlib import Path

import torch

from services.core.checkpoint import CheckpointError
from services.core.engine import InvalidInput
from services.tts.conditioning import load_voice, resolve_voice

MAX_NAME_CHARS = 255  # a voice name (a relative path inside the voices folder)
MAX_VOICE_FILE_BYTES = 64 << 20  # Kyutai's voice embeddings are about 0.3 MB

VoiceKey = tuple[str, int, int]  # resolved path, size, mtime in ns


class VoiceCache:
    def __init__(self, folder: str | os.PathLike, device: torch.device | str,
                 max_voices: int = 16):
        self.folder, self.device, self.max_voices = Path(folder), device, max_voices
        self._voices: collections.OrderedDict[VoiceKey, torch.Tensor] = \
            collections.OrderedDict()
        self.loads = 0  # files read (for tests and stats)

    def __len__(self) -> int:
        return len(self._voices)

    def lookup(self, name: str) -> tuple[VoiceKey, torch.Tensor]:
        """The voice ``name`` (cached or freshly read; not kept until ``keep``), or
        InvalidInput saying why not."""
        key = self._key(name)
        if key in self._voices:
            self._voices.move_to_end(key)
            return key, self._voices[key]
        if key[1] > MAX_VOICE_FILE_BYTES:
            raise InvalidInput(f"voice {_shown(name)} is not a voice file (too large)")
        try:
            voice = load_voice(key[0])
        except (CheckpointError, ValueError, OSError):  # their messages hold our paths
            raise InvalidInput(f"voice {_shown(name)} is not a readable voice file") from None
        self.loads += 1
        return key, voice.to(self.device)

    def keep(self, key: VoiceKey, voice: torch.Tensor) -> None:
        """Keeps an accepted voice, dropping the least recently used beyond ``max_voices``."""
        self._voices[key] = voice
        self._voices.move_to_end(key)
        while len(self._voices) > self.max_voices:
            self._voices.popitem(last=False)

    def _key(self, name: str) -> VoiceKey:
        if len(name) > MAX_NAME_CHARS:
            raise InvalidInput(f"voice names are at most {MAX_NAME_CHARS} characters, got "
                               f"{len(name)}")
        try:
            path = resolve_voice(self.folder, name)
            stat = path.stat()
        except (OSError, ValueError):  # not found, outside the folder, a NUL, too long a part
            raise InvalidInput(f"unknown voice {_shown(name)} (see ListVoices)") from None
        return str(path), stat.st_size, stat.st_mtime_ns


def _shown(name: str) -> str:
    """The name as the client wrote it, shortened for a message."""
    return repr(name if len(name) <= 60 else name[:57] + "...")
