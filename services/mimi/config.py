"""Mimi's hyper-parameters: a frozen config in three groups (SEANet, transformer, quantizer),
read from a checkpoint's JSON where one exists, else one of the named presets."""

from __future__ import annotations

import dataclasses

from services.core.transformer import TransformerConfig
from services.mimi.quantizer import QuantizerConfig
from services.mimi.seanet import SeanetConfig


@dataclasses.dataclass(frozen=True)
class MimiConfig:
    seanet: SeanetConfig
    transformer: TransformerConfig  # the encoder and decoder transformers (same shape)
    quantizer: QuantizerConfig
    sample_rate: int = 24_000
    frame_rate: float = 12.5

    @property
    def encoder_frame_rate(self) -> float:
        """Rate of the SEANet latent, before the learnt downsampling."""
        return self.sample_rate / self.seanet.hop_length

    @property
    def downsample_stride(self) -> int:
        stride = self.encoder_frame_rate / self.frame_rate
        if stride != int(stride) or stride < 1:
            raise ValueError(f"encoder rate {self.encoder_frame_rate} Hz is not a whole "
                             f"multiple of the frame rate {self.frame_rate} Hz")
        return int(stride)

    @property
    def frame_size(self) -> int:
        """Samples per code frame (1920 = 80 ms for the published model)."""
        return self.seanet.hop_length * self.downsample_stride

    @property
    def dimension(self) -> int:
        return self.seanet.dimension

    @property
    def max_codebooks(self) -> int:
        return self.quantizer.n_q

    @property
    def cardinality(self) -> int:
        return self.quantizer.bins

    @classmethod
    def from_dict(cls, d: dict) -> MimiConfig:
        """Reads the codec hyper-parameters laid out as ``{seanet, transformer, quantizer,
        sample_rate, frame_rate}`` (the golden files' ``config``); a dict holding that under
        ``config`` (the whole sidecar JSON) is accepted too."""
        if "config" in d:
            d = d["config"]
        if d.get("channels", 1) != 1:
            raise ValueError(f"only mono Mimi is supported, got channels={d['channels']}")
        return cls(
            seanet=SeanetConfig.from_dict(d["seanet"]),
            transformer=_transformer_from_dict(d["transformer"]),
            quantizer=QuantizerConfig.from_dict(d["quantizer"]),
            sample_rate=int(d.get("sample_rate", 24_000)),
            frame_rate=float(d.get("frame_rate", 12.5)),
        )


def _transformer_from_dict(d: dict) -> TransformerConfig:
    if not d.get("causal", True):
        raise ValueError("only causal Mimi transformers are supported")
    dim = d["d_model"]
    # ProjectedTransformer projections are identities when every width equals d_model.
    if d.get("input_dimension", dim) != dim or any(o != dim for o in d.get("output_dimensions",
                                                                            [dim])):
        raise ValueError("Mimi transformers with input/output projections are not supported")
    names = {f.name for f in dataclasses.fields(TransformerConfig)}
    return TransformerConfig(**{k: v for k, v in d.items() if k in names})


def _codec_transformer(d_model: int, num_heads: int, num_layers: int, dim_feedforward: int,
                       context: int) -> TransformerConfig:
    return TransformerConfig(
        d_model=d_model, num_heads=num_heads, num_layers=num_layers,
        dim_feedforward=dim_feedforward, norm="layer_norm", gating="none", layer_scale=0.01,
        context=context, max_period=10_000.0, positional_embedding="rope")


PRESETS: dict[str, MimiConfig] = {
    # Kyutai's published codec (docs/architecture.md#mimi):
    # tokenizer-e351c8d8-checkpoint125.safetensors.
    "mimi_202407": MimiConfig(
        seanet=SeanetConfig(),
        transformer=_codec_transformer(512, 8, 8, 2048, context=250),
        quantizer=QuantizerConfig(),
    ),
    # The built-in random model: same frame geometry and codebook count/size (so its codes are
    # valid anywhere real Mimi codes are), a few hundred times less compute.
    "tiny": MimiConfig(
        seanet=SeanetConfig(dimension=64, n_filters=8),
        transformer=_codec_transformer(64, 4, 2, 128, context=250),
        quantizer=QuantizerConfig(dimension=32, input_dimension=64, output_dimension=64),
    ),
    # A codec whose step costs next to nothing (bench/bench_serving.py's null model): what a
    # serving benchmark then measures is the server around it. It keeps the frame geometry
    # callers rely on (1920-sample frames at 24 kHz, 32 codebooks) with the fewest, narrowest
    # layers: one SEANet stage (hop 960, then the learnt x2 downsampling) one channel wide,
    # kernel-1 convs at the sample rate, no residual blocks, one 8-wide transformer layer, and
    # 64-entry codebooks (matching the "null" LM's card). Its codes barely vary: it is a
    # stand-in for timing, not a codec.
    "null": MimiConfig(
        seanet=SeanetConfig(dimension=8, n_filters=1, n_residual_layers=0, ratios=(960,),
                            kernel_size=1, last_kernel_size=1),
        transformer=_codec_transformer(8, 2, 1, 8, context=8),
        quantizer=QuantizerConfig(dimension=8, bins=64, input_dimension=8,
                                  output_dimension=8),
    ),
}


def get_preset(name: str) -> MimiConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown Mimi preset {name!r}; known: {sorted(PRESETS)}") from None
