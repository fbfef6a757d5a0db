"""The Mimi neural audio codec: 24 kHz mono audio <-> 12.5 Hz frames of 1..32 codes.

    model = load_mimi(hf_repo="kyutai/moshiko-pytorch-bf16")   # or build_random_mimi()
    codes = model.encode(wav)                    # [B, 1, N] -> [B, K, ceil(N / 1920)]
    wav = model.decode(codes)                    # -> [B, 1, 1920 * T]

    enc, dec = model.init_encoder_state(B), model.init_decoder_state(B)   # B sessions
    codes = model.encode_step(pcm, enc, active)  # [B, 1, 1920 * k] -> [B, K, k]
    pcm = model.decode_step(codes, dec, active)  # [B, K, k] -> [B, 1, 1920 * k]
    enc.reset(mask)                              # restart the sessions in mask [B]

Serving sessions stream through ``services.core.tick`` (``FrameSplitter`` buffers their
audio); codes_file reads and writes the codes files of ``moshi-services mimi``.
"""

from services.mimi.codes_file import CodesFile, CodesFileError, load_codes, save_codes
from services.mimi.config import PRESETS, MimiConfig, get_preset
from services.mimi.loading import CHECKPOINT_NAMES, build_random_mimi, load_mimi
from services.mimi.model import DecoderState, EncoderState, MimiModel

__all__ = [
    "CHECKPOINT_NAMES",
    "PRESETS",
    "CodesFile",
    "CodesFileError",
    "DecoderState",
    "EncoderState",
    "MimiConfig",
    "MimiModel",
    "build_random_mimi",
    "get_preset",
    "load_codes",
    "load_mimi",
    "save_codes",
]
