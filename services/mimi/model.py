"""The Mimi codec (spec §1): 24 kHz mono audio <-> 12.5 Hz frames of up to 32 codes.

    encode: wav [B, 1, N] -> SEANet encoder (25 Hz) -> transformer -> downsample x2 (12.5 Hz)
            -> split RVQ -> codes [B, K, N / 1920]
    decode: codes -> RVQ decode -> upsample x2 (depthwise) -> transformer -> SEANet decoder
            -> wav [B, 1, 1920 * T]

Everything is causal, so one code path serves batch and streaming: a batch call is a streaming
call on a fresh state. Inside, tensors are time-major [B, T, C] (services.mimi.conv); the public
methods take and return Kyutai's layouts (wav [B, 1, N], latents [B, D, T]).

Streaming states are explicit objects for B independent sessions (``init_encoder_state`` /
``init_decoder_state``), each session resettable on its own (``state.reset(mask)``) and frozen
by the ``active`` mask while idle.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from services.core.conv import ConvState, ConvTransposeState
from services.core.streaming import StreamingState
from services.core.transformer import Transformer, TransformerConfig, TransformerState
from services.mimi.config import MimiConfig
from services.mimi.conv import TimeMajorConv1d, TimeMajorConvTranspose1d
from services.mimi.quantizer import SplitResidualVectorQuantizer
from services.mimi.seanet import SeanetDecoder, SeanetEncoder, SeanetState

DEFAULT_CODEBOOKS = 8  # Moshi's setting (1.1 kbps)
# Batch calls run in pieces of this many frames (10 s) so memory stays bounded on long audio;
# the result is identical because a piece is just a streaming call.
BATCH_CHUNK_FRAMES = 125


@dataclasses.dataclass
class EncoderState(StreamingState):
    seanet: SeanetState
    transformer: TransformerState
    downsample: ConvState


@dataclasses.dataclass
class DecoderState(StreamingState):
    upsample: ConvTransposeState
    transformer: TransformerState
    seanet: SeanetState


class ProjectedTransformer(nn.Module):
    """Kyutai's wrapper can project in and out of the transformer; Mimi's widths all equal
    d_model, so only its ``transformer`` key level remains."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.transformer = Transformer(cfg)

    def forward(self, x: Tensor, state: TransformerState, active: Tensor | None = None) -> Tensor:
        return self.transformer(x, state, active)


class Downsample(nn.Module):
    """25 -> 12.5 Hz: learnt strided conv, first frame replicated as left padding (spec §1.5)."""

    def __init__(self, dim: int, stride: int):
        super().__init__()
        self.conv = TimeMajorConv1d(dim, dim, 2 * stride, stride, bias=False,
                                    pad_mode="replicate")

    def forward(self, x: Tensor, state: ConvState, active: Tensor | None = None) -> Tensor:
        return self.conv(x, state, active)


class Upsample(nn.Module):
    """12.5 -> 25 Hz: depthwise transposed conv (groups = channels, Kyutai's default)."""

    def __init__(self, dim: int, stride: int):
        super().__init__()
        self.convtr = TimeMajorConvTranspose1d(dim, dim, 2 * stride, stride, groups=dim,
                                               bias=False)

    def forward(self, x: Tensor, state: ConvTransposeState,
                active: Tensor | None = None) -> Tensor:
        return self.convtr(x, state, active)


class MimiModel(nn.Module):
    def __init__(self, cfg: MimiConfig, num_codebooks: int = DEFAULT_CODEBOOKS,
                 name: str = "mimi"):
        super().__init__()
        self.cfg = cfg
        self.name = name  # recorded in codes files, so decode can tell which model made them
        self.encoder = SeanetEncoder(cfg.seanet)
        self.decoder = SeanetDecoder(cfg.seanet)
        self.encoder_transformer = ProjectedTransformer(cfg.transformer)
        self.decoder_transformer = ProjectedTransformer(cfg.transformer)
        self.downsample = Downsample(cfg.dimension, cfg.downsample_stride)
        self.upsample = Upsample(cfg.dimension, cfg.downsample_stride)
        self.quantizer = SplitResidualVectorQuantizer(cfg.quantizer)
        self.num_codebooks = self.resolve_num_codebooks(num_codebooks)

    @property
    def frame_size(self) -> int:
        return self.cfg.frame_size

    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    def set_num_codebooks(self, n: int) -> None:
        """Codebooks ``encode`` returns unless a call says otherwise (all stay loaded)."""
        self.num_codebooks = self.resolve_num_codebooks(n)

    def resolve_num_codebooks(self, n: int | None) -> int:
        """``n``, or the model's setting when None; checked against the codebooks it has."""
        n = self.num_codebooks if n is None else n
        if not 1 <= n <= self.cfg.max_codebooks:
            raise ValueError(f"number of codebooks must be in 1..{self.cfg.max_codebooks}, "
                             f"got {n}")
        return n

    def _param(self) -> Tensor:
        return self.downsample.conv.inner.weight

    @property
    def device(self) -> torch.device:
        return self._param().device

    @property
    def dtype(self) -> torch.dtype:
        return self._param().dtype

    # ---- streaming -----------------------------------------------------------------------

    def init_encoder_state(self, batch_size: int, device: torch.device | str | None = None,
                           max_frames: int = 1) -> EncoderState:
        """A fresh encoder state for ``batch_size`` sessions; ``max_frames`` is the most frames
        one ``encode_step`` will usually bring (larger calls still work, split internally)."""
        dtype, device = self.dtype, device or self.device
        steps = max_frames * self.cfg.downsample_stride
        return EncoderState(
            seanet=self.encoder.init_state(batch_size, device, dtype),
            transformer=self.encoder_transformer.transformer.init_state(
                batch_size, device, dtype, max_chunk=steps),
            downsample=self.downsample.conv.init_state(batch_size, device, dtype),
        )

    def init_decoder_state(self, batch_size: int, device: torch.device | str | None = None,
                           max_frames: int = 1) -> DecoderState:
        dtype, device = self.dtype, device or self.device
        steps = max_frames * self.cfg.downsample_stride
        return DecoderState(
            upsample=self.upsample.convtr.init_state(batch_size, device, dtype),
            transformer=self.decoder_transformer.transformer.init_state(
                batch_size, device, dtype, max_chunk=steps),
            seanet=self.decoder.init_state(batch_size, device, dtype),
        )

    def encode_latent_step(self, pcm: Tensor, state: EncoderState,
                           active: Tensor | None = None) -> Tensor:
        """pcm [B, 1, k * frame_size] -> unquantized latent [B, D, k] at the frame rate."""
        return self._encode_latent(pcm, state, active).transpose(1, 2)

    def _encode_latent(self, pcm: Tensor, state: EncoderState,
                       active: Tensor | None) -> Tensor:
        """pcm [B, 1, N] -> latent [B, N / frame_size, D] (time-major)."""
        if pcm.shape[-1] == 0 or pcm.shape[-1] % self.frame_size:
            raise ValueError(f"streaming encode needs a positive multiple of {self.frame_size} "
                             f"samples, got {pcm.shape[-1]}; buffer whole frames first "
                             "(FrameSplitter does)")
        x = pcm.to(self.dtype).reshape(pcm.shape[0], -1, 1)  # mono: [B, N, 1]
        x = self.encoder(x, state.seanet, active)
        x = self.encoder_transformer(x, state.transformer, active)
        return self.downsample(x, state.downsample, active)

    def encode_step(self, pcm: Tensor, state: EncoderState, active: Tensor | None = None,
                    num_codebooks: int | None = None) -> Tensor:
        """pcm [B, 1, k * frame_size] -> codes [B, K, k] (int64), one frame per 80 ms, no
        lookahead. Sessions where ``active`` [B] is False keep their state (their codes are
        meaningless)."""
        n = self.resolve_num_codebooks(num_codebooks)
        return self.quantizer.encode(self._encode_latent(pcm, state, active), n)

    def decode_step(self, codes: Tensor, state: DecoderState,
                    active: Tensor | None = None) -> Tensor:
        """codes [B, K, k] (any K in 1..max) -> pcm [B, 1, k * frame_size], in the model's
        dtype (float32 by default)."""
        return self._decode_latent(self.quantizer.decode(codes), state, active)

    def decode_latent_step(self, latent: Tensor, state: DecoderState,
                           active: Tensor | None = None) -> Tensor:
        """Quantized latent [B, D, k] -> pcm [B, 1, k * frame_size] (decode without codes)."""
        return self._decode_latent(latent.transpose(1, 2), state, active)

    def _decode_latent(self, latent: Tensor, state: DecoderState,
                       active: Tensor | None) -> Tensor:
        """latent [B, k, D] (time-major) -> pcm [B, 1, k * frame_size]."""
        x = self.upsample(latent.to(self.dtype), state.upsample, active)
        x = self.decoder_transformer(x, state.transformer, active)
        return self.decoder(x, state.seanet, active).view(latent.shape[0], 1, -1)

    # ---- batch ---------------------------------------------------------------------------

    def decode_latent(self, codes: Tensor) -> Tensor:
        """codes [B, K, T] -> quantized latent [B, D, T] (output projections included)."""
        return self.quantizer.decode(codes).transpose(1, 2)

    def encode_to_latent(self, wav: Tensor) -> Tensor:
        """wav [B, 1, N] -> unquantized latent [B, D, ceil(N / frame_size)]."""
        return self._batch_latent(wav).transpose(1, 2)

    def _batch_latent(self, wav: Tensor) -> Tensor:
        if wav.shape[-1] == 0:
            return wav.new_zeros(wav.shape[0], 0, self.cfg.dimension, dtype=self.dtype)
        wav = self._pad_to_frames(wav)
        chunk = self._chunk(wav.shape[-1])
        state = self.init_encoder_state(wav.shape[0], max_frames=chunk)
        pieces = wav.split(chunk * self.frame_size, dim=-1)
        return torch.cat([self._encode_latent(p, state, None) for p in pieces], dim=1)

    def encode(self, wav: Tensor, num_codebooks: int | None = None) -> Tensor:
        """wav [B, 1, N] -> codes [B, K, ceil(N / frame_size)]; the end is zero-padded to a
        whole frame."""
        return self.quantizer.encode(self._batch_latent(wav),
                                     self.resolve_num_codebooks(num_codebooks))

    def decode(self, codes: Tensor) -> Tensor:
        """codes [B, K, T] -> wav [B, 1, T * frame_size]. Not trimmed: callers that know the
        original length cut it."""
        batch, _, frames = codes.shape
        if frames == 0:
            return torch.zeros(batch, 1, 0, dtype=self.dtype, device=codes.device)
        chunk = self._chunk(frames * self.frame_size)
        state = self.init_decoder_state(batch, max_frames=chunk)
        return torch.cat([self.decode_step(c, state) for c in codes.split(chunk, dim=-1)],
                         dim=-1)

    def _pad_to_frames(self, wav: Tensor) -> Tensor:
        return F.pad(wav, (0, -wav.shape[-1] % self.frame_size))

    def _chunk(self, samples: int) -> int:
        frames = -(-samples // self.frame_size)
        return max(1, min(frames, BATCH_CHUNK_FRAMES))
