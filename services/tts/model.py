"""Kyutai's TTS model (DSM-TTS, docs/architecture.md §4): the Moshi LM with

- a demuxed text embedding (main + look-ahead stream muxed in one id), in the temporal and the
  depth transformer;
- conditioning: LUT conditions summed into the input at every step, voice embeddings as the
  source of a cross-attention added to every temporal layer.

The scheduled depformer weights and low-rank depformer embeddings are LM config features, and
everything else (delays, caches, sampling) is the LM's too. Parameter names match the
checkpoint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from services.core.constants import FRAME_RATE
from services.core.transformer import Transformer, TransformerState
from services.moshi_lm.config import LMConfig
from services.moshi_lm.model import LMModel, TemporalOutput
from services.tts.conditioning import ConditioningConfig, ConditionProvider
from services.tts.embeddings import DemuxTextEmbedding
from services.tts.state_machine import StateMachineConfig


@dataclasses.dataclass(frozen=True)
class TTSConfig:
    """Generation settings of a TTS checkpoint (``tts_config`` of its config.json) plus the
    state machine's defaults for checkpoints (initial padding 2, max padding 8)."""

    audio_delay: float = 1.28  # seconds the audio lags the text
    second_stream_ahead: int = 0  # look-ahead stream distance in words (0: none)
    max_speakers: int = 5
    multi_speaker: bool = True  # speaker tokens in front of each turn's first word
    initial_padding: int = 2
    max_padding: int = 8
    final_padding: int = 4  # steps generated past end_step + delay_steps
    padding_between: int = 1
    max_gen_length: int = 30_000  # steps

    @property
    def delay_steps(self) -> int:
        """The audio delay in steps (16 for 1.28 s)."""
        return int(self.audio_delay * FRAME_RATE)

    @classmethod
    def from_lm_config(cls, cfg: LMConfig, **overrides) -> TTSConfig:
        tts = cfg.tts_config
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in tts.items() if k in known}
        return cls(**{**values, **overrides})

    def state_machine(self, text_card: int) -> StateMachineConfig:
        return StateMachineConfig(card=text_card + 1, second_stream_ahead=self.second_stream_ahead,
                                  max_padding=self.max_padding,
                                  initial_padding=self.initial_padding)


@dataclasses.dataclass
class Conditions:
    """Per-session conditioning tensors (float32, cast when used)."""

    sum: Tensor | None  # [B, 1, dim] added to the input at every step
    cross: Tensor | None  # [B, S, dim] cross-attention source


@dataclasses.dataclass
class ConditionedState(TransformerState):
    """The temporal transformer's state plus each session's summed condition: constant for a
    session, it lives with the session's caches (reset with them) and is added to the input
    at every step by ``TTSModel.temporal``."""

    condition_sum: Tensor | None = None  # [B, 1, dim]


class TTSModel(LMModel):
    unbuilt_keys = ()  # builds every TTS key through the hooks below

    def __init__(self, cfg: LMConfig):
        super().__init__(cfg)
        conditioning = ConditioningConfig.from_lm_config(
            cfg.extra, max_speakers=cfg.tts_config.get("max_speakers", 5))
        if conditioning is not None:
            self.condition_provider = ConditionProvider(conditioning, cfg.dim)

    def _make_text_embedding(self, dim: int, rank: int | None = None) -> nn.Module:
        if not self.cfg.extra.get("demux_second_stream"):
            return super()._make_text_embedding(dim, rank)
        # Low rank (the depformer's): the shared table has width rank, out1 / out2 map to dim.
        return DemuxTextEmbedding(self.cfg.text_card + 1, rank or dim, dim,
                                  low_rank=rank is not None)

    def _make_transformer(self) -> Transformer:
        cross = bool(self.cfg.extra.get("cross_attention"))
        return Transformer(dataclasses.replace(self.cfg.transformer, cross_attention=cross))

    @property
    def tts_config(self) -> TTSConfig:
        return TTSConfig.from_lm_config(self.cfg)

    # ---- conditioning -----------------------------------------------------------------------

    def conditions(self, values: Mapping[str, Sequence[str | None]],
                   voices: Sequence[Sequence[Tensor | None]] | None) -> Conditions:
        """Conditioning of B sessions: ``values`` the LUT values per session (e.g.
        {"control": ["ok"], "cfg": ["2.0"]}), ``voices`` each session's voice slots."""
        provider = getattr(self, "condition_provider", None)
        if provider is None:
            return Conditions(None, None)
        summed = provider.sum_condition(values) if provider.cfg.sum else None
        cross = provider.cross_source(voices) if provider.cfg.cross and voices else None
        return Conditions(summed, cross)

    def init_temporal_state(self, batch_size: int, device: torch.device | str | None = None,
                            dtype: torch.dtype | None = None,
                            voice_length: int | None = None) -> ConditionedState:
        """The temporal state of B sessions, with room for their conditions; ``voice_length``
        is the length T of the voice embeddings [1, D, T] (needed with cross-attention)."""
        cross_length = None
        if voice_length is not None and self.cfg.extra.get("cross_attention"):
            cross_length = voice_length * self.condition_provider.cfg.max_speakers
        base = self.transformer.init_state(batch_size, device, dtype, cross_length=cross_length)
        condition_sum = None
        if getattr(self, "condition_provider", None) is not None:
            condition_sum = torch.zeros(batch_size, 1, self.cfg.dim, device=base.keys.device,
                                        dtype=base.keys.dtype)
        fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
        return ConditionedState(**fields, condition_sum=condition_sum)

    def set_conditions(self, state: ConditionedState, conditions: Conditions,
                       sessions: Tensor | None = None) -> None:
        """Stores the conditions of the sessions ``sessions`` (long indices [n]; all when
        None) in their state; ``conditions`` holds n rows."""
        rows = slice(None) if sessions is None else sessions
        if conditions.sum is not None:
            state.condition_sum[rows] = conditions.sum.to(state.condition_sum.dtype)
        if conditions.cross is not None:
            self.transformer.set_cross_source(state, conditions.cross, sessions)

    def temporal(self, x: Tensor, state: TransformerState | None = None,
                 active: Tensor | None = None) -> TemporalOutput:
        if isinstance(state, ConditionedState) and state.condition_sum is not None:
            x = x + state.condition_sum
        return super().temporal(x, state, active)
