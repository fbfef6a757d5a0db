"""The built-in tiny random models: what every command and ``serve`` run when no checkpoint is
given, so the whole toolkit works offline and the tests need no download.

This is the one place they are built: one seed, one function per model, one tokenizer, one
warning. Every process (an in-process CLI run, ``serve``, a test) therefore holds the same
weights, and a command gives the same output in process and through a server.

Their output is fake but readable: ``BuiltinTokenizer`` shows every text token as a printable
character, so a random model's "words" are visible letters rather than replacement marks.

Torch is imported inside the builders only: the CLI reads the constants at start-up.
"""

from __future__ import annotations

import codecs
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from services.mimi.model import MimiModel
    from services.moshi_lm.model import LMModel
    from services.tts.loading import TTSBundle

BUILTIN_SEED = 0  # every process builds the same random weights: separate servers agree
# Built-in random model pairs (a Mimi and an LM preset of the same name): "tiny", the default
# stand-in for a checkpoint, and "null", whose steps cost next to nothing so that a benchmark
# of the server measures the serving around the models (bench/bench_serving.py).
BUILTIN_PRESETS = ("tiny", "null")
BUILTIN_LM_NAME = "builtin-tiny-random"
BUILTIN_STT_NAME = "builtin-tiny-random-stt"
# build_random_mimi names its model after its preset and seed; see builtin_mimi.
BUILTIN_MIMI_NAME = f"random-tiny-seed{BUILTIN_SEED}"


def builtin_warning(what: str) -> str:
    """The one wording of the warning printed when a built-in model stands in."""
    return (f"warning: no checkpoint given: using the built-in tiny random {what}; its output "
            "is fake (give --hf-repo or a checkpoint for real results)")


def announce(what: str) -> None:
    """Prints ``builtin_warning(what)`` on standard error (looked up at call time, so click's
    test runner captures it)."""
    print(builtin_warning(what), file=sys.stderr, flush=True)


def builtin_mimi(device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                 num_codebooks: int = 8, preset: str = "tiny") -> MimiModel:
    """The built-in Mimi (``tiny`` preset: named BUILTIN_MIMI_NAME; ``null``: a codec whose
    steps cost next to nothing, see BUILTIN_PRESETS)."""
    import torch

    from services.mimi.loading import build_random_mimi

    return build_random_mimi(preset, seed=BUILTIN_SEED, device=device,
                             dtype=dtype or torch.float32, num_codebooks=num_codebooks)


def builtin_lm(device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
               quantize: str | None = None, preset_name: str = "tiny") -> LMModel:
    """The built-in LM in the Moshi layout (8 + 8 codebooks, text and audio out): it serves
    dialogue, and ASR / TTS by delays."""
    import torch

    from services.moshi_lm.config import preset
    from services.moshi_lm.loader import prepare_for_inference
    from services.moshi_lm.model import LMModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(BUILTIN_SEED)
        model = LMModel(preset(preset_name))
    return prepare_for_inference(model.to(device=device, dtype=dtype or torch.float32),
                                 quantize)


def builtin_stt(device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                quantize: str | None = None) -> LMModel:
    """A tiny random LM in Kyutai STT's layout (32 audio codebooks in, text only out), for the
    STT-checkpoint path (``build_stt_service`` without a checkpoint, benchmarks)."""
    import torch

    from services.moshi_lm.config import LMConfig
    from services.moshi_lm.loader import prepare_for_inference
    from services.moshi_lm.model import LMModel

    cfg = LMConfig(dim=64, num_heads=4, num_layers=2, context=64, text_card=300, n_q=32,
                   dep_q=0, delays=(0,) * 33, stt_config={"audio_delay_seconds": 0.5})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(BUILTIN_SEED)
        model = LMModel(cfg)
    return prepare_for_inference(model.to(device=device, dtype=dtype or torch.float32),
                                 quantize)


def builtin_tts(device: torch.device | str = "cpu", dtype: torch.dtype | None = None
                ) -> tuple[TTSBundle, torch.Tensor]:
    """A tiny random model in Kyutai TTS's layout and a random voice [1, 32, T] for it."""
    import torch

    from services.tts.loading import build_random_tts

    return build_random_tts(BUILTIN_SEED, device, dtype or torch.float32)


# ---- the built-in text tokenizer ---------------------------------------------------------------

_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _as_letters(error: UnicodeDecodeError) -> tuple[str, int]:
    """Codec error handler: each undecodable byte shown as a letter (readable, not U+FFFD)."""
    bad = error.object[error.start:error.end]
    return "".join(_LETTERS[b % 26] for b in bad), error.end


codecs.register_error("moshi-services-letters", _as_letters)


class BuiltinTokenizer:
    """UTF-8 bytes as tokens 4..259, each word starting with a space: the text tokenizer of
    the built-in models (which have no SentencePiece file). Decoding never shows a
    replacement mark: bytes that are not valid UTF-8 and characters that are not printable
    show as letters, so a random model's text is readable (and plainly nonsense)."""

    OFFSET = 4
    HIDDEN = (0, 3)  # EPAD and PAD: markers of the text stream, not text

    def __init__(self, vocab: int = 300):
        """``vocab``: the model's text vocabulary (the built-in LMs' text_card is 300)."""
        self.vocab = vocab

    def encode(self, text: str) -> list[int]:
        return [self.OFFSET + b for b in b" " + text.encode("utf-8")]

    def decode(self, ids: Iterable[int]) -> str:
        data = bytes(i - self.OFFSET for i in ids if self.OFFSET <= i < self.OFFSET + 256)
        text = data.decode("utf-8", errors="moshi-services-letters")
        return "".join(c if c.isprintable() or c == " " else _LETTERS[ord(c) % 26]
                       for c in text)

    def display(self, ids: Iterable[int]) -> str:
        """As ``decode`` (the name WordEncoder gives it)."""
        return self.decode(ids)

    @property
    def pieces(self) -> list[str]:
        """Display text of every token id, one at a time (the LM's streamed text): markers
        and ids outside the bytes show as nothing."""
        return ["" if i in self.HIDDEN else self.decode([i]) for i in range(self.vocab)]
