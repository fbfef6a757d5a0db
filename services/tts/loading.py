"""Loading a Kyutai TTS checkpoint (config.json, weights, text tokenizer), or building the tiny
random stand-in used offline without one."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from services.builtin import BuiltinTokenizer
from services.core.checkpoint import build_on_meta, load_into, load_state_dict, resolve_file
from services.moshi_lm.config import LMConfig
from services.moshi_lm.loader import load_config, prepare_for_inference
from services.tts.model import TTSModel
from services.tts.script import WordEncoder

DEFAULT_REPO = "kyutai/tts-1.6b-en_fr"
BUILTIN_VOICE_LENGTH = 10  # frames of the built-in model's random voice


@dataclasses.dataclass
class TTSBundle:
    model: TTSModel
    tokenizer: WordEncoder
    name: str


def _sentencepiece(path: Path) -> WordEncoder:
    import sentencepiece

    return sentencepiece.SentencePieceProcessor(model_file=str(path))


def load_tts(checkpoint: str | os.PathLike | None = None, hf_repo: str | None = None, *,
             config: LMConfig | None = None, device: torch.device | str = "cpu",
             dtype: torch.dtype = torch.float32) -> TTSBundle:
    """A Kyutai TTS model from a folder (or weights file next to its config.json) or a Hugging
    Face repository. Conditioners stay float32 (the reference keeps them so)."""
    config = config or load_config(checkpoint, hf_repo)
    if not config.tts_config:
        raise ValueError(f"not a TTS checkpoint (model_type {config.model_type!r}, "
                         "no tts_config)")
    if checkpoint is not None and Path(checkpoint).is_file():
        weights = Path(checkpoint)
    else:
        weights = resolve_file(config.moshi_name, checkpoint, hf_repo)
    model = build_on_meta(lambda: TTSModel(config))
    state = load_state_dict(weights, dtype=dtype, device=device,
                            keep_dtype=lambda key: key.startswith("condition_provider."))
    load_into(model, state, source=str(weights))
    tokenizer_path = _local(config.tokenizer_name, checkpoint, hf_repo)
    return TTSBundle(prepare_for_inference(model), _sentencepiece(tokenizer_path),
                     weights.name)


def _local(name: str, checkpoint: str | os.PathLike | None, hf_repo: str | None) -> Path:
    if checkpoint is not None and Path(checkpoint).is_file():
        checkpoint = Path(checkpoint).parent
    return resolve_file(name, checkpoint, hf_repo)


def tiny_config() -> LMConfig:
    """A tiny random model in the layout of Kyutai's TTS (demuxed text, look-ahead stream,
    voice cross-attention, cfg / control conditions, scheduled depformer)."""
    lut = {"n_bins": 7, "dim": 16, "tokenizer": "noop",
           "possible_values": ["1.0", "1.5", "2.0", "2.5", "3.0", "3.5", "4.0"]}
    return LMConfig.from_dict({
        "dim": 64, "text_card": 300, "n_q": 8, "dep_q": 8, "card": 2048, "num_heads": 4,
        "num_layers": 2, "context": 64, "delays": [0, 0] + [2] * 7,
        "depformer_dim": 32, "depformer_dim_feedforward": 64, "depformer_num_heads": 2,
        "depformer_num_layers": 1, "depformer_weights_per_step_schedule": [0, 1, 2, 3] + [4] * 4,
        "depformer_low_rank_embeddings": 8, "demux_second_stream": True,
        "cross_attention": True, "model_type": "tts",
        "conditioners": {
            "speaker_wavs": {"type": "tensor", "tensor": {"dim": 32}},
            "cfg": {"type": "lut", "lut": lut},
            "control": {"type": "lut", "lut": {**lut, "n_bins": 1, "possible_values": ["ok"]}}},
        "fuser": {"cross_attention_pos_emb": True, "cross_attention_pos_emb_scale": 1.0,
                  "sum": ["control", "cfg"], "cross": ["speaker_wavs"], "prepend": []},
        "tts_config": {"audio_delay": 0.24, "second_stream_ahead": 2},
    })


def build_random_tts(seed: int = 0, device: torch.device | str = "cpu",
                     dtype: torch.dtype = torch.float32) -> tuple[TTSBundle, torch.Tensor]:
    """The built-in tiny random TTS model and a random voice [1, 32, T] for it. Its audio is
    noise; it lets the CLI and services run without a download."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TTSModel(tiny_config())
        for name, param in model.named_parameters():
            if param.dim() > 1 or name.endswith("learnt_padding"):
                torch.nn.init.normal_(param, std=0.2)
        voice = torch.randn(1, 32, BUILTIN_VOICE_LENGTH)
    model = prepare_for_inference(model.to(device=device, dtype=dtype))
    return TTSBundle(model, BuiltinTokenizer(), f"random-tts-seed{seed}"), voice
