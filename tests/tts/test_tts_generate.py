"""Streaming synthesis against the golden tts_dev runs (greedy), both scripts in one batch."""

import json

import numpy as np
import pytest
import sentencepiece
import torch

from services.core.checkpoint import build_on_meta, load_into, load_state_dict
from services.mimi.loading import load_mimi
from services.moshi_lm.config import LMConfig
from services.moshi_lm.generate import SamplingSettings
from services.tts.conditioning import load_voice
from services.tts.generate import TTSGenerator, TTSRequest
from services.tts.model import TTSModel
from tests.conftest import FIXTURES

GOLDEN = np.load(FIXTURES / "tts_dev_golden.npz")
META = json.loads(str(GOLDEN["meta"]))
CONFIG = LMConfig.from_dict(json.loads((FIXTURES / "tts_dev.json").read_text())["kyutai_config"])


@pytest.fixture(scope="module")
def runs():
    model = load_into(build_on_meta(lambda: TTSModel(CONFIG)),
                      load_state_dict(FIXTURES / "tts_dev.safetensors")).eval()
    tokenizer = sentencepiece.SentencePieceProcessor(
        model_file=str(FIXTURES / "tts_dev_tokenizer.model"))
    voice = load_voice(FIXTURES / "tts_dev_voice.safetensors")
    generator = TTSGenerator(model, tokenizer, max_sessions=3, voice_length=voice.shape[-1])
    request = TTSRequest(voices=(voice,), cfg_coef=2.0, sampling=SamplingSettings.greedy())
    # Scripts in slots 2 and 0; slot 1 stays idle.
    slots = {2: 0, 0: 1}
    sessions = {slot: generator.start(slot, request, [META["scripts"][f"script{k}"]["text"]])
                for slot, k in slots.items()}
    outputs = {slot: [] for slot in slots}
    running = list(slots)
    while running:
        for slot, out in zip(running, generator.step(running), strict=True):
            outputs[slot].append(out)
        running = [s for s in running if not outputs[s][-1].done]
    mimi = load_mimi(FIXTURES / "mimi_dev.safetensors", num_codebooks=16)
    pcm = {}
    for slot, outs in outputs.items():
        state = mimi.init_decoder_state(1)
        decoded, kept = [], []
        for out in outs:
            if out.frame is not None:
                with torch.no_grad():
                    chunk = mimi.decode_step(torch.from_numpy(out.frame)[None, :, None], state)
                chunk = chunk.clamp(-1, 1)[0, 0].numpy()
                decoded.append(chunk)
                if out.emit:
                    kept.append(chunk)
        pcm[slot] = np.concatenate(decoded), np.concatenate(kept)
    return {k: (sessions[slot], outputs[slot], pcm[slot]) for slot, k in slots.items()}


@pytest.mark.parametrize("k", [0, 1])
def test_tokens_frames_and_words_match_golden(runs, k):
    session, outputs, _ = runs[k]
    script = META["scripts"][f"script{k}"]
    assert len(outputs) == script["n_steps"]
    assert [o.fed for o in outputs] == GOLDEN[f"s{k}_text_fed"].tolist()
    assert session.machine.end_step == script["end_step"]
    assert session.machine.consumption_times == GOLDEN[f"s{k}_consumption_times"].tolist()
    frames = GOLDEN[f"s{k}_frames"]
    delay_steps = META["tts"]["delay_steps"]
    got = [o.frame for o in outputs[2:]]
    assert all(f is None for f in got[:delay_steps])
    np.testing.assert_array_equal(np.stack(got[delay_steps:]), frames[delay_steps:, 1:])
    assert (frames[:delay_steps, 1:] == -1).all()
    words = [w for o in outputs for w in o.words]
    assert [(w.text, w.step) for w in words] == [tuple(t) for t in script["transcript"]]
    assert [w.start for w in words] == [(s - 2) / 12.5 for _, s in script["transcript"]]


@pytest.mark.parametrize("k", [0, 1])
def test_audio_matches_golden(runs, k):
    _, _, (pcm_all, pcm) = runs[k]
    np.testing.assert_allclose(pcm_all, GOLDEN[f"s{k}_pcm_all"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(pcm, GOLDEN[f"s{k}_pcm"], atol=1e-4, rtol=0)


def test_fewer_codebooks_and_speed_bias():
    model = load_into(build_on_meta(lambda: TTSModel(CONFIG)),
                      load_state_dict(FIXTURES / "tts_dev.safetensors")).eval()
    tokenizer = sentencepiece.SentencePieceProcessor(
        model_file=str(FIXTURES / "tts_dev_tokenizer.model"))
    voice = load_voice(FIXTURES / "tts_dev_voice.safetensors")
    generator = TTSGenerator(model, tokenizer, max_sessions=3, voice_length=voice.shape[-1])
    text = [META["scripts"]["script0"]["text"]]
    greedy = SamplingSettings.greedy()
    requests = {0: TTSRequest(voices=(voice,), sampling=greedy),
                1: TTSRequest(voices=(voice,), sampling=greedy, num_codebooks=6),
                2: TTSRequest(voices=(voice,), sampling=greedy, padding_bonus=3.0)}
    sessions = {slot: generator.start(slot, r, text) for slot, r in requests.items()}
    outputs = {slot: [] for slot in requests}
    running = list(requests)
    while running:
        for slot, out in zip(running, generator.step(running), strict=True):
            outputs[slot].append(out)
        running = [s for s in running if not outputs[s][-1].done]
    frames = np.stack([o.frame for o in outputs[1] if o.frame is not None])
    assert (frames[:, 6:] == -1).all() and (frames[:, :6] >= 0).all()
    # The first audio frame is made before any missing codebook is fed back to the model:
    # its first 6 codebooks are the full run's.
    first = next(o.frame for o in outputs[0] if o.frame is not None)
    np.testing.assert_array_equal(frames[0, :6], first[:6])
    # A PAD bonus delays every new word: the script takes longer.
    assert sessions[2].machine.end_step > sessions[0].machine.end_step
    with pytest.raises(ValueError, match="num_codebooks"):
        generator.check(TTSRequest(voices=(voice,), num_codebooks=17))
    with pytest.raises(ValueError, match="shape"):
        generator.check(TTSRequest(voices=(voice[..., :5],)))
