"""Conditioning of Kyutai's TTS models (docs/architecture.md §4).

- ``cfg`` and ``control`` are look-up-table conditioners: a value (e.g. "2.0", "ok") picks an
  embedding row, projected to the model width and *summed* into the input at every step.
- ``speaker_wavs`` is a tensor conditioner: up to ``max_speakers`` voice embeddings [1, D, T]
  are laid in slots, projected, padded with a learnt vector where a slot is empty, given
  sinusoidal positions, and become the *cross-attention* source of every temporal layer.

Parameter names follow the checkpoint: ``condition_provider.conditioners.<name>.*``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from services.core.checkpoint import load_state_dict

VOICE_KEY = "speaker_wavs"
VOICE_SUFFIX = ".safetensors"


class LUTConditioner(nn.Module):
    """A categorical value -> one vector [B, 1, dim]; a missing value gives ``learnt_padding``."""

    def __init__(self, n_bins: int, lut_dim: int, dim: int, possible_values: Sequence[str]):
        super().__init__()
        self.possible_values = list(possible_values)
        self.embed = nn.Embedding(n_bins + 1, lut_dim)
        self.output_proj = nn.Linear(lut_dim, dim, bias=False)
        self.learnt_padding = nn.Parameter(torch.zeros(1, 1, dim))

    def index(self, value: str) -> int:
        if value not in self.possible_values:
            raise ValueError(f"value {value!r} not among {self.possible_values}")
        return self.possible_values.index(value)

    def forward(self, values: Sequence[str | None]) -> Tensor:
        device = self.embed.weight.device
        ids = torch.tensor([0 if v is None else self.index(v) for v in values], device=device)
        out = self.output_proj(self.embed(ids))[:, None]
        missing = torch.tensor([v is None for v in values], device=device)[:, None, None]
        return torch.where(missing, self.learnt_padding.to(out.dtype), out)


class TensorConditioner(nn.Module):
    """A sequence of vectors [B, S, D] -> [B, S, dim]; masked-out positions get
    ``learnt_padding``."""

    def __init__(self, input_dim: int, dim: int):
        super().__init__()
        self.output_proj = nn.Linear(input_dim, dim, bias=False)
        self.learnt_padding = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        out = self.output_proj(x.to(self.output_proj.weight.dtype))
        return torch.where(mask[..., None], out, self.learnt_padding.to(out.dtype))


def sinusoidal_positions(length: int, dim: int, device: torch.device | str | None = None,
                         max_period: float = 10_000.0) -> Tensor:
    """[length, dim]: [cos(p * f_i) | sin(p * f_i)] with f_i = max_period^(-i / (dim/2 - 1))."""
    half = dim // 2
    positions = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freqs = torch.exp(torch.arange(half, device=device, dtype=torch.float32)
                      * (-math.log(max_period) / (half - 1)))
    phase = positions * freqs
    return torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)


@dataclasses.dataclass(frozen=True)
class ConditioningConfig:
    """The ``conditioners`` and ``fuser`` groups of a Kyutai TTS config.json."""

    conditioners: Mapping[str, Mapping]
    sum: tuple[str, ...] = ()  # conditioners summed into the input at every step
    cross: tuple[str, ...] = ()  # conditioners that form the cross-attention source
    cross_attention_pos_emb: bool = False
    cross_attention_pos_emb_scale: float = 1.0
    max_speakers: int = 5

    @classmethod
    def from_lm_config(cls, config: Mapping, max_speakers: int = 5) -> ConditioningConfig | None:
        """None for a model without conditioners (plain Moshi, STT)."""
        if not config.get("conditioners"):
            return None
        fuser = config.get("fuser", {})
        if fuser.get("prepend"):
            raise ValueError("prepend conditioning is not supported")
        return cls(conditioners=config["conditioners"], sum=tuple(fuser.get("sum", ())),
                   cross=tuple(fuser.get("cross", ())),
                   cross_attention_pos_emb=fuser.get("cross_attention_pos_emb", False),
                   cross_attention_pos_emb_scale=fuser.get("cross_attention_pos_emb_scale", 1.0),
                   max_speakers=max_speakers)


class ConditionProvider(nn.Module):
    """All conditioners of a model, and how their outputs reach it."""

    def __init__(self, cfg: ConditioningConfig, dim: int):
        super().__init__()
        self.cfg = cfg
        self.dim = dim
        modules = {}
        for name, spec in cfg.conditioners.items():
            if spec["type"] == "lut":
                lut = spec["lut"]
                modules[name] = LUTConditioner(lut["n_bins"], lut["dim"], dim,
                                               lut["possible_values"])
            elif spec["type"] == "tensor":
                modules[name] = TensorConditioner(spec["tensor"]["dim"], dim)
            else:
                raise ValueError(f"unsupported conditioner type {spec['type']!r} ({name})")
        self.conditioners = nn.ModuleDict(modules)
        if len(cfg.cross) > 1:
            raise ValueError("only one cross-attention conditioner is supported")

    def sum_condition(self, values: Mapping[str, Sequence[str | None]]) -> Tensor:
        """[B, 1, dim] added to the model input at every step; ``values[name]`` has one value
        per session (None: the conditioner's learnt padding)."""
        return sum(self.conditioners[name](values[name]) for name in self.cfg.sum)

    def cross_source(self, voices: Sequence[Sequence[Tensor | None]]) -> Tensor:
        """The cross-attention source [B, max_speakers * T, dim] of each session's speaker
        slots (voice tensors [1, D, T]; None: empty slot)."""
        (name,) = self.cfg.cross
        x, mask = speaker_slots(voices, self.cfg.max_speakers)
        out = self.conditioners[name](x, mask)
        if self.cfg.cross_attention_pos_emb:
            positions = sinusoidal_positions(out.shape[1], self.dim, out.device)
            out = out + self.cfg.cross_attention_pos_emb_scale * positions.to(out.dtype)
        return out


def speaker_slots(voices: Sequence[Sequence[Tensor | None]],
                  max_speakers: int) -> tuple[Tensor, Tensor]:
    """Per session, up to ``max_speakers`` voices [1, D, T] laid slot after slot:
    x [B, max_speakers * T, D] (zeros in empty slots) and mask [B, max_speakers * T]."""
    given = [v for session in voices for v in session if v is not None]
    if not given:
        raise ValueError("at least one voice is needed")
    _, dim, length = given[0].shape
    device = given[0].device
    x = torch.zeros(len(voices), max_speakers, length, dim, device=device)
    mask = torch.zeros(len(voices), max_speakers, length, dtype=torch.bool, device=device)
    for b, session in enumerate(voices):
        if len(session) > max_speakers:
            raise ValueError(f"at most {max_speakers} voices per session")
        for slot, voice in enumerate(session):
            if voice is None:
                continue
            if voice.shape != (1, dim, length):
                raise ValueError(f"voice of shape {tuple(voice.shape)}, expected "
                                 f"{(1, dim, length)}")
            x[b, slot] = voice[0].T.to(x.dtype)
            mask[b, slot] = True
    return x.flatten(1, 2), mask.flatten(1, 2)


def load_voice(path: str | os.PathLike, device: torch.device | str = "cpu") -> Tensor:
    """A voice embedding file: key ``speaker_wavs`` [1, D, T], float32."""
    state = load_state_dict(path, torch.float32, device=device)
    if VOICE_KEY not in state or state[VOICE_KEY].dim() != 3:
        raise ValueError(f"{path}: not a voice file (needs {VOICE_KEY!r} [1, D, T])")
    return state[VOICE_KEY]


def list_voices(folder: str | os.PathLike) -> list[str]:
    """Voice names in a folder tree (Kyutai's tts-voices layout: ``<dir>/<name>.safetensors``,
    possibly ``<name>.<sig>@<epoch>.safetensors``), as paths relative to the folder."""
    root = Path(folder)
    if not root.is_dir():
        return []
    return sorted(p.relative_to(root).as_posix() for p in root.rglob(f"*{VOICE_SUFFIX}"))


def resolve_voice(folder: str | os.PathLike, name: str) -> Path:
    """The file of voice ``name`` (with or without the suffix) inside ``folder``; refuses
    names that leave the folder."""
    root = Path(folder).resolve()
    path = (root / (name if name.endswith(VOICE_SUFFIX) else name + VOICE_SUFFIX)).resolve()
    if root not in path.parents or not path.is_file():
        raise FileNotFoundError(f"unknown voice {name!r}")
    return path
