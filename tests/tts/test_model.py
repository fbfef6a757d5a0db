"""The TTS model against the golden run, teacher-forced: fed the golden inputs of every step,
its greedy text and audio choices must be the golden ones."""

import json

import numpy as np
import pytest
import torch

from services.core.checkpoint import build_on_meta, load_into, load_state_dict
from services.moshi_lm.config import LMConfig
from services.tts.conditioning import load_voice
from services.tts.model import TTSModel
from tests.conftest import FIXTURES

GOLDEN = np.load(FIXTURES / "tts_dev_golden.npz")
CONFIG = LMConfig.from_dict(json.loads((FIXTURES / "tts_dev.json").read_text())["kyutai_config"])


@pytest.fixture(scope="module")
def model() -> TTSModel:
    built = build_on_meta(lambda: TTSModel(CONFIG))
    return load_into(built, load_state_dict(FIXTURES / "tts_dev.safetensors")).eval()


def golden_inputs(k: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The input tokens [1, T, 17] of each step of golden script k (the LM's delayed
    layout), and the tokens chosen at each step [1, T, 17] (text fed, audio sampled)."""
    cfg = CONFIG
    fed = torch.from_numpy(GOLDEN[f"s{k}_text_fed"])
    frames = torch.from_numpy(GOLDEN[f"s{k}_frames"])  # [T - 2, 17], de-delayed
    steps = frames.shape[0]
    chosen = torch.full((steps, cfg.num_streams), -100)
    chosen[:, 0] = fed[:steps]
    for s, delay in enumerate(cfg.delays[1:], start=1):
        chosen[delay:, s] = frames[:steps - delay, s]  # sampled at step t: time t - delay
    inputs = torch.cat([torch.tensor([cfg.initial_tokens]), chosen[:-1]])
    for s, delay in enumerate(cfg.delays):
        inputs[:delay + 1, s] = cfg.initial_tokens[s]
    return inputs[None], chosen[None], steps


@pytest.mark.parametrize("k", [0, 1])
def test_teacher_forced_text_and_audio_match_golden(model, k):
    tts = model.tts_config
    inputs, chosen, steps = golden_inputs(k)
    voice = load_voice(FIXTURES / "tts_dev_voice.safetensors")
    with torch.no_grad():
        conditions = model.conditions({"control": ["ok"], "cfg": ["2.0"]}, [[voice]])
        state = model.init_temporal_state(1, voice_length=voice.shape[-1])
        model.set_conditions(state, conditions)
        temporal = model.temporal(model.embed(inputs), state)
        golden_text = GOLDEN[f"s{k}_text_predicted"][:steps]
        assert temporal.text_logits[0].argmax(-1).tolist() == golden_text.tolist()
        # Audio is forced to -1 before delay_steps + delay: compare the steps after that.
        first = tts.delay_steps + max(CONFIG.delays)
        projected = model.depformer_inputs(temporal.hidden[0, first:])
        depth_state = model.init_depformer_state(steps - first)
        previous = chosen[0, first:, 0]
        for q in range(CONFIG.dep_q):
            logits = model.depth_step(q, projected[:, q], previous, depth_state)
            previous = chosen[0, first:, 1 + q]
            assert logits.argmax(-1).tolist() == previous.tolist(), f"codebook {q}"
