"""The Mimi neural audio codec: 24 kHz mono audio <-> 12.5 Hz frames of 1..32 codes."""

from services.mimi.config import PRESETS, MimiConfig, get_preset
from services.mimi.loading import CHECKPOINT_NAMES, build_random_mimi, load_mimi
from services.mimi.model import DecoderState, EncoderState, MimiModel

__all__ = [
    "CHECKPOINT_NAMES",
    "PRESETS",
    "DecoderState",
    "EncoderState",
    "MimiConfig",
    "MimiModel",
    "build_random_mimi",
    "get_preset",
    "load_mimi",
]
