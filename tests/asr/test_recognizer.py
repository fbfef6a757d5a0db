"""The recogniser against the golden STT run, batching, pause heads and clip framing."""

import json

import numpy as np
import pytest
import torch

from services.asr.recognizer import Recognizer, frame_codes, transcribe
from services.asr.timing import SttTiming
from services.asr.words import WordDecoder
from services.moshi_lm.config import LMConfig
from services.moshi_lm.generate import SamplingSettings
from services.moshi_lm.loader import load_lm
from tests.conftest import FIXTURES

GOLDEN = np.load(FIXTURES / "lm_dev_stt_greedy.npz")
TIMING = SttTiming(audio_delay_seconds=0.48)  # 6 frames
PIECES = {i: f"▁w{i}" if i % 3 == 0 else f"p{i}" for i in range(300)}


def decode(ids):
    return "".join(PIECES[i] for i in ids).replace("▁", " ")


def load(name: str):
    config = LMConfig.from_dict(json.loads((FIXTURES / f"{name}.json").read_text()))
    return load_lm(FIXTURES / f"{name}.safetensors", config=config)


@pytest.fixture(scope="module")
def stt_model():
    return load("lm_dev_stt")


def golden_frames() -> torch.Tensor:
    """The golden run feeds code column t at step t and ignores column 0 (step 0 sees the
    initial tokens): the same as a clip whose frames are columns 1.. with the first fed
    twice."""
    codes = torch.from_numpy(GOLDEN["user_codes"]).T
    return torch.cat([codes[1:2], codes[1:]])


def test_tokens_match_golden_and_words_follow_them(stt_model):
    recognizer = Recognizer(stt_model, decode, max_sessions=1, timing=TIMING)
    session = recognizer.start(0, SamplingSettings.greedy())
    outs = [recognizer.step([0], frame[None])[0] for frame in golden_frames()]
    assert [o.token for o in outs] == GOLDEN["text_sampled"].tolist()
    assert all(o.pauses is None and not o.end_of_turn for o in outs)
    expected = WordDecoder(decode, TIMING)
    reports = [w for t in GOLDEN["text_sampled"].tolist() for w in expected.push(t)]
    assert [w for o in outs for w in o.words] == reports
    assert session.flush().words == expected.flush()


def test_sessions_in_a_batch_equal_sessions_alone(stt_model):
    frames = golden_frames()
    other = torch.from_numpy(np.random.default_rng(7).integers(0, 64, (25, 32)))
    recognizer = Recognizer(stt_model, decode, max_sessions=3, timing=TIMING)
    recognizer.start(2, SamplingSettings.greedy())
    tokens = {0: [], 2: []}
    for t in range(len(frames)):
        slots = [2] if t < 15 else [0, 2]
        if t == 15:
            recognizer.start(0, SamplingSettings.greedy())
        codes = torch.stack([other[t - 15] if s == 0 else frames[t] for s in slots])
        for s, out in zip(slots, recognizer.step(slots, codes), strict=True):
            tokens[s].append(out.token)
    alone = Recognizer(stt_model, decode, max_sessions=1, timing=TIMING)
    alone.start(0, SamplingSettings.greedy())
    alone_other = [alone.step([0], c[None])[0].token for c in other]
    assert tokens[2] == GOLDEN["text_sampled"].tolist()
    assert tokens[0] == alone_other


def test_pause_heads_give_probabilities_and_turn_events():
    model = load("lm_dev_stt_vad")
    recognizer = Recognizer(model, decode, max_sessions=2, timing=TIMING)
    recognizer.start(1, SamplingSettings.greedy())
    codes = torch.from_numpy(np.random.default_rng(3).integers(0, 64, (32, 30))).T
    fed = torch.cat([codes[:1], codes])
    outs = [recognizer.step([1], c[None])[0] for c in fed]
    pauses = torch.tensor([o.pauses for o in outs])
    assert pauses.shape == (31, 4)
    # Teacher-forced reference: the heads' softmax of the same steps, prob[0]. Step t sees
    # the text of step t - 1 and the codes fed at t (initial tokens at step 0).
    tokens = torch.tensor([o.token for o in outs])
    inputs = torch.cat([tokens[:-1, None], fed[1:]], dim=1)
    inputs = torch.cat([torch.tensor([[200] + [64] * 32]), inputs])[None]
    with torch.no_grad():
        temporal, _ = model(inputs)
    torch.testing.assert_close(pauses, temporal.extra_probs[0, :, :, 0], atol=1e-5, rtol=0)
    ended = [i for i, o in enumerate(outs) if o.end_of_turn]
    started = [i for i, o in enumerate(outs) if o.speech_started]
    for end in ended:  # an end of turn only follows speech
        assert any(s <= end for s in started)
        assert pauses[end, 2] > 0.5


def test_clip_framing_and_transcribe(stt_model):
    timing = SttTiming(audio_delay_seconds=0.5, silence_prefix_seconds=0.2)
    seen = []

    def encode(wav):
        seen.append(wav.shape[-1])
        frames = wav.shape[-1] // 1920
        return torch.arange(frames)[None, None].expand(1, 32, frames) % 64

    codes = frame_codes(encode, np.zeros(10_000, np.float32), timing)
    # 4800 prefix + 10000 + 36000 flush = 50800 samples -> 26 whole frames (26.46).
    assert seen == [26 * 1920]
    assert codes.shape == (27, 32)
    assert codes[:3, 0].tolist() == [0, 0, 1]  # the first frame twice
    recognizer = Recognizer(stt_model, decode, max_sessions=1, timing=TIMING)
    words = transcribe(recognizer, golden_frames(), sampling=SamplingSettings.greedy())
    expected = WordDecoder(decode, TIMING)
    for t in GOLDEN["text_sampled"].tolist():
        expected.push(t)
    expected.flush()
    assert words == expected.words and words
