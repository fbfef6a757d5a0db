"""The checks a TTS request's text gets as it is queued (``TextCheck``), and the bounded
text path of a synthesis session: chunked and whole text still give the same words."""

import pytest

from services.builtin import BuiltinTokenizer
from services.core.engine import InvalidInput
from services.tts.script import MAX_TAG_CHARS, ScriptBuilder, TextCheck, prepare_script

TOKENIZER = BuiltinTokenizer(300)


def check(*chunks: str, max_chars: int = 10_000, max_break: float = 5.0) -> TextCheck:
    checker = TextCheck(max_chars, max_break)
    for chunk in chunks:
        checker.push(chunk)
    return checker


def test_breaks_within_the_bound_pass():
    check('a <break time="5s"/> b <break time = "0.25s" /> <break time=1s>')


@pytest.mark.parametrize("tag, words", [
    ('<break time="5.5s"/>', "longer than the longest allowed"),
    ('<break time="99999999s"/>', "longer than the longest allowed"),
    ('<break time="1e400s"/>', "invalid break tag"),
    ('<break time="-1s"/>', "invalid break tag"),
    ("<break>", "invalid break tag"),
    ('<BREAK time="1s"/>', "invalid break tag"),
])
def test_an_overlong_or_malformed_break_is_refused(tag, words):
    with pytest.raises(InvalidInput, match=words):
        check(f"hello {tag} world")


def test_a_break_is_checked_wherever_the_chunks_cut_it():
    text = 'so <break time="120s"/> then'
    for cut in range(1, len(text)):
        with pytest.raises(InvalidInput, match="120 s"):
            check(text[:cut], text[cut:])
    long_gap = "x " * MAX_TAG_CHARS  # the tag arrives long after the text before it
    with pytest.raises(InvalidInput):
        check(long_gap, '<break time="9', '9s"/>')


def test_the_text_of_a_request_is_bounded_in_total():
    checker = check("a" * 60, "b" * 40, max_chars=100)
    assert checker.chars == 100
    with pytest.raises(InvalidInput, match="at most 100 characters"):
        checker.push("c")
    with pytest.raises(InvalidInput, match="must be a string"):
        check(b"bytes")


def test_a_stray_angle_bracket_holds_back_only_a_tag_length():
    """An unclosed "<" may start a break tag, but no tag is longer than MAX_TAG_CHARS: past
    that the text is words again (before, everything after a stray "<" was held back), and
    chunked text still gives the same entries as the whole."""
    text = "a < b " + "word " * 60 + "end"
    builder = ScriptBuilder(TOKENIZER)
    streamed = []
    for i in range(0, len(text), 7):
        streamed += builder.push(text[i:i + 7])
        held = len(builder._pending)
        assert held <= MAX_TAG_CHARS + 7
    assert [e.text for e in streamed][:2] == ["a", "<"]
    streamed += builder.finish()
    assert streamed == prepare_script([text], TOKENIZER)


def test_a_session_turns_text_into_words_only_as_it_needs_them():
    """100 000 characters absorbed at once become a few words for the state machine (entries
    weigh ~75x their text); the rest stays raw text, and more is not taken in."""
    from services.builtin import builtin_lm
    from services.tts.mode import TEXT_BUFFER_CHARS, TEXT_PIECE_CHARS, SynthesisMode

    cfg = builtin_lm().cfg
    mode = SynthesisMode.for_moshi(cfg, TOKENIZER, 4, sampling=None)
    assert mode.wants_input
    mode.absorb("word " * 20_000)
    assert len(mode.machine.entries) <= TEXT_PIECE_CHARS // 5 + 1
    assert not mode.wants_input and TEXT_BUFFER_CHARS < 100_000
    for _ in range(2000):  # steps consume words; the raw text refills the machine
        mode.choose_text(None)
    assert mode.machine.cursor > TEXT_PIECE_CHARS // 5 + 1 and not mode.machine.needs_text
    assert len(mode.machine.entries) - mode.machine.cursor <= TEXT_PIECE_CHARS // 5 + 1
