import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from services.core.checkpoint import check_state_dict, load_state_dict
from services.core.transformer import RMSNorm, Transformer, TransformerConfig
from services.moshi_lm.model import LowRankEmbedding
from services.tts.conditioning import (
    ConditioningConfig,
    ConditionProvider,
    LUTConditioner,
    list_voices,
    load_voice,
    resolve_voice,
    sinusoidal_positions,
    speaker_slots,
)
from services.tts.embeddings import DemuxTextEmbedding
from tests.conftest import FIXTURES

LM_CONFIG = json.loads((FIXTURES / "tts_dev.json").read_text())["config"]
STATE = load_state_dict(FIXTURES / "tts_dev.safetensors")
GOLDEN = np.load(FIXTURES / "tts_dev_golden.npz")


def sub_state(prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in STATE.items() if k.startswith(prefix)}


def golden_provider() -> ConditionProvider:
    provider = ConditionProvider(ConditioningConfig.from_lm_config(LM_CONFIG), LM_CONFIG["dim"])
    provider.load_state_dict(sub_state("condition_provider."))
    return provider


def test_checkpoint_keys_fit_the_modules():
    holder = nn.Module()
    holder.condition_provider = golden_provider()
    holder.text_emb = DemuxTextEmbedding(LM_CONFIG["text_card"] + 1, LM_CONFIG["dim"])
    holder.depformer_text_emb = DemuxTextEmbedding(
        LM_CONFIG["text_card"] + 1, LM_CONFIG["depformer_low_rank_embeddings"],
        LM_CONFIG["depformer_dim"], low_rank=True)
    prefixes = ("condition_provider.", "text_emb.", "depformer_text_emb.")
    check_state_dict(holder, {k: v for k, v in STATE.items() if k.startswith(prefixes)})


def test_demux_embedding_formula():
    emb = DemuxTextEmbedding(card=5, dim=3)
    E = emb.weight.detach()
    with torch.no_grad():
        out = emb(torch.tensor([[2, 5 * 1 + 4, 5 * 3 + 0, -1]]))[0]
        torch.testing.assert_close(out[0], emb.out1(E[2]))
        torch.testing.assert_close(out[1], emb.out1(E[4]) + emb.out2(E[0]))  # second = 0
        torch.testing.assert_close(out[2], emb.out1(E[0]) + emb.out2(E[2]))
    assert out[3].abs().max() == 0
    low = LowRankEmbedding(7, 2, 5)
    with torch.no_grad():
        out = low(torch.tensor([3, -1]))
        torch.testing.assert_close(out[0], low.low_rank(low.weight[3]))
    assert out[1].abs().max() == 0


def test_lut_values_and_learnt_padding():
    lut = LUTConditioner(3, 4, 6, ["a", "b", "c"])
    nn.init.normal_(lut.learnt_padding)
    with torch.no_grad():
        out = lut(["c", None])
    torch.testing.assert_close(out[0, 0], lut.output_proj(lut.embed.weight[2]).detach())
    torch.testing.assert_close(out[1:], lut.learnt_padding.detach())
    with pytest.raises(ValueError, match="not among"):
        lut(["d"])


def test_speaker_slots_and_positions():
    v1, v2 = torch.randn(1, 4, 3), torch.randn(1, 4, 3)
    x, mask = speaker_slots([[v1, None, v2], [None, v1]], max_speakers=3)
    assert x.shape == (2, 9, 4) and mask.shape == (2, 9)
    torch.testing.assert_close(x[0, 0:3], v1[0].T)
    torch.testing.assert_close(x[0, 6:9], v2[0].T)
    assert mask.tolist()[0] == [True] * 3 + [False] * 3 + [True] * 3
    assert mask.tolist()[1] == [False] * 3 + [True] * 3 + [False] * 3
    pos = sinusoidal_positions(7, 8)
    p, i = 5, 2
    assert pos[p, i].item() == pytest.approx(math.cos(p / 10000 ** (i / 3)), abs=1e-6)
    assert pos[p, 4 + i].item() == pytest.approx(math.sin(p / 10000 ** (i / 3)), abs=1e-6)


def teacher_forced_text_argmax(k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The temporal transformer fed the golden run's own inputs (text fed and audio frames,
    delayed as the LM does) with the golden conditioning: its text argmax at each step must be
    the golden prediction. Exercises the demuxed embedding, the LUT sum, the voice
    cross-attention source and the cross-attention layers together."""
    cfg = LM_CONFIG
    transformer = Transformer(TransformerConfig(
        d_model=cfg["dim"], num_heads=cfg["num_heads"], num_layers=cfg["num_layers"],
        dim_feedforward=int(cfg["hidden_scale"] * cfg["dim"]), norm=cfg["norm"],
        gating=cfg["gating"], context=cfg["context"], max_period=cfg["max_period"],
        cross_attention=True))
    transformer.load_state_dict(sub_state("transformer."))
    text_emb = DemuxTextEmbedding(cfg["text_card"] + 1, cfg["dim"])
    text_emb.load_state_dict(sub_state("text_emb."))
    out_norm = RMSNorm(cfg["dim"])
    out_norm.load_state_dict(sub_state("out_norm."))
    provider = golden_provider()
    voice = load_voice(FIXTURES / "tts_dev_voice.safetensors")

    fed = torch.from_numpy(GOLDEN[f"s{k}_text_fed"])
    frames = torch.from_numpy(GOLDEN[f"s{k}_frames"])
    steps = frames.shape[0] + 1  # the last step whose inputs the frames determine
    text_in = torch.cat([torch.tensor([cfg["text_card"]]), fed[:steps - 1]])
    x = text_emb(text_in)
    for q, delay in enumerate(cfg["delays"][1:]):
        # Codebook q at step t: its initial token while t <= delay, else the token of time
        # t - 1 - delay (-1 embeds to zero).
        audio = torch.full((steps,), cfg["card"])
        audio[delay + 1:] = frames[:steps - delay - 1, 1 + q]
        table = STATE[f"emb.{q}.weight"]
        x = x + torch.where((audio < 0)[:, None], 0.0, table[audio.clamp(min=0)])
    x = x[None] + provider.sum_condition({"control": ["ok"], "cfg": ["2.0"]})
    h = transformer(x, cross_source=provider.cross_source([[voice]]))
    logits = out_norm(h) @ STATE["text_linear.weight"].T
    return logits[0].argmax(-1), torch.from_numpy(GOLDEN[f"s{k}_text_predicted"][:steps])


@pytest.mark.parametrize("k", [0, 1])
def test_teacher_forced_text_matches_golden(k):
    with torch.no_grad():
        predicted, golden = teacher_forced_text_argmax(k)
    assert predicted.tolist() == golden.tolist()


def test_voice_files(tmp_path):
    (tmp_path / "expresso").mkdir()
    voice = torch.randn(1, 32, 10)
    save_file({"speaker_wavs": voice}, str(tmp_path / "expresso" / "happy.abc@1.safetensors"))
    save_file({"other": voice}, str(tmp_path / "bad.safetensors"))
    assert list_voices(tmp_path) == ["bad.safetensors", "expresso/happy.abc@1.safetensors"]
    assert list_voices(tmp_path / "missing") == []
    path = resolve_voice(tmp_path, "expresso/happy.abc@1")
    torch.testing.assert_close(load_voice(path), voice)
    with pytest.raises(ValueError, match="not a voice file"):
        load_voice(resolve_voice(tmp_path, "bad.safetensors"))
    for name in ("nope", "../x", "/etc/passwd"):
        with pytest.raises(FileNotFoundError, match="unknown voice"):
            resolve_voice(tmp_path, name)
