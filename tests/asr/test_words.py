import pytest
import torch

from services.asr.timing import SttTiming
from services.asr.vad import TurnDetector, extra_head_probabilities, pause_probabilities
from services.asr.words import Word, WordDecoder

EPAD, PAD = 0, 3
PIECES = {10: "▁he", 11: "llo", 12: "▁wor", 13: "ld", 14: "▁a", 1: ""}
TIMING = SttTiming(audio_delay_seconds=0.5)


def decode(ids):
    return "".join(PIECES[i] for i in ids).replace("▁", " ")


def run(tokens, timing=TIMING):
    decoder = WordDecoder(decode, timing)
    reports = [(step, w) for step, t in enumerate(tokens) for w in decoder.push(t)]
    return decoder, reports


def approx_word(text, start, end):
    return Word(text, pytest.approx(start), None if end is None else pytest.approx(end))


def test_words_times_interim_final_and_flush():
    tokens = [PAD] * 7 + [EPAD, 10, 11, PAD, PAD, EPAD, 12, 13, EPAD, 14, PAD, PAD]
    decoder, reports = run(tokens)
    # hello: starts the step after the EPAD (8), reported at the first PAD (10), ends at the
    # next EPAD (12); world: closed by an EPAD right after its pieces, so reported final only.
    assert reports == [
        (10, approx_word("hello", 8 / 12.5 - 0.5, None)),
        (12, approx_word("hello", 8 / 12.5 - 0.5, 12 / 12.5 - 0.5)),
        (15, approx_word("world", 13 / 12.5 - 0.5, 15 / 12.5 - 0.5)),
        (17, approx_word("a", 16 / 12.5 - 0.5, None)),
    ]
    assert decoder.current == approx_word("a", 16 / 12.5 - 0.5, None)
    # End of input: the open word ends at the step after its last piece.
    assert decoder.flush() == [approx_word("a", 16 / 12.5 - 0.5, 17 / 12.5 - 0.5)]
    assert [w.text for w in decoder.words] == ["hello", "world", "a"]
    assert all(w.is_final for w in decoder.words)
    assert decoder.current is None and decoder.flush() == []


def test_pieces_after_an_interim_report_update_the_word():
    _, reports = run([PAD] * 10 + [EPAD, 10, PAD, 11, PAD, PAD, EPAD])
    assert [(s, w.text, w.is_final) for s, w in reports] == [
        (12, "he", False), (14, "hello", False), (16, "hello", True)]
    assert reports[-1][1] == approx_word("hello", 11 / 12.5 - 0.5, 16 / 12.5 - 0.5)


def test_pieces_before_any_epad_empty_words_and_clamping():
    timing = SttTiming(audio_delay_seconds=0.5, silence_prefix_seconds=1.0)
    _, reports = run([PAD, 10, 11, EPAD, EPAD, 1, EPAD] + [PAD] * 20 + [EPAD, 12, EPAD], timing)
    # "hello" starts with its first piece (no EPAD before it); times before the audio clamp
    # to 0; the control token 1 decodes to nothing and gives no word.
    assert reports == [(3, Word("hello", 0.0, 0.0)),
                       (29, approx_word("wor", 28 / 12.5 - 1.5, 29 / 12.5 - 1.5))]


def test_timing_arithmetic():
    timing = SttTiming.from_config({"stt_config": {"audio_delay_seconds": 2.5,
                                                   "audio_silence_prefix_seconds": 1.0}})
    assert timing.offset_seconds == 3.5
    assert timing.prefix_samples == 24_000
    assert timing.flush_samples == 84_000  # delay + 1 s
    assert timing.flush_frames(0) == 43  # 43.75 frames: the partial one is dropped
    assert timing.flush_frames(1000) == 44
    assert timing.audio_time(50) == 0.5
    assert timing.audio_time(10) == 0.0
    assert SttTiming.from_text_delay_frames(25) == SttTiming(2.0, 0.0)
    with pytest.raises(ValueError, match="stt_config"):
        SttTiming.from_config({"dim": 64})


def test_end_of_turn_once_per_turn_after_speech():
    turn = TurnDetector()
    assert not turn.update([0.9, 0.9, 0.9, 0.9])  # silence before anyone spoke
    assert turn.speech()  # voice activity begins
    assert not turn.speech()
    assert not turn.update([0.9, 0.9, 0.4, 0.9])  # only head 2 decides
    assert turn.update([0.1, 0.1, 0.6, 0.1])
    assert not turn.update([0.1, 0.1, 0.7, 0.1])
    assert turn.speech()
    assert turn.update(torch.tensor([0.0, 0.0, 0.51, 0.0]))


def test_head_probabilities():
    logits = torch.randn(2, 4, 6)
    probs = extra_head_probabilities(logits)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 4))
    torch.testing.assert_close(pause_probabilities(probs), torch.softmax(logits, -1)[..., 0])
