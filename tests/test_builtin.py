"""The registry of built-in tiny random models: one seed, one warning, readable fake text."""

import torch

from services import builtin
from services.builtin import BUILTIN_MIMI_NAME, BuiltinTokenizer, builtin_lm, builtin_mimi


def test_the_builtin_mimi_is_named_as_codes_files_say():
    assert builtin_mimi().name == BUILTIN_MIMI_NAME


def test_every_build_gives_the_same_weights():
    a, b = builtin_lm(), builtin_lm()
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                 b.state_dict().values(), strict=True))


def test_one_wording_of_the_warning(capsys):
    builtin.announce("Mimi")
    assert capsys.readouterr().err == builtin.builtin_warning("Mimi") + "\n"
    assert "built-in tiny random Mimi" in builtin.builtin_warning("Mimi")


def test_the_tokenizer_round_trips_text_and_shows_random_tokens_as_letters():
    tokenizer = BuiltinTokenizer()
    assert tokenizer.decode(tokenizer.encode("Hello, wörld")) == " Hello, wörld"
    noise = tokenizer.decode(range(4, 300))  # every byte, invalid UTF-8 and controls included
    assert "\ufffd" not in noise and all(c.isprintable() for c in noise)
    pieces = tokenizer.pieces
    assert len(pieces) == 300 and pieces[0] == pieces[3] == ""  # EPAD and PAD are markers
    assert pieces[4 + ord("a")] == "a" and all(p.isprintable() for p in pieces)
