"""The text side of the LM: Kyutai's SentencePiece tokenizers and the display convention of
the text stream (PAD and EPAD are markers, not text; "▁" starts a word)."""

from __future__ import annotations

import os
from collections.abc import Iterable

from services.core.checkpoint import CheckpointError, resolve_file
from services.core.constants import TEXT_EPAD, TEXT_PAD
from services.moshi_lm.config import LMConfig

_WORD_START = "\u2581"  # SentencePiece's "▁"


class TextTokenizer:
    def __init__(self, path: str | os.PathLike, hidden: Iterable[int] = (TEXT_PAD, TEXT_EPAD)):
        """``hidden``: ids shown as nothing (PAD 3 and EPAD 0 by default)."""
        import sentencepiece

        try:
            self.sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
        except (OSError, RuntimeError) as e:
            raise CheckpointError(f"cannot read SentencePiece model {path}: {e}") from e
        self.hidden = frozenset(hidden)
        self._pieces = [self._display(i) for i in range(self.sp.vocab_size())]

    @classmethod
    def for_checkpoint(cls, config: LMConfig, checkpoint: str | os.PathLike | None = None,
                       hf_repo: str | None = None) -> TextTokenizer:
        """The tokenizer named by the config (``tokenizer_name``), from the checkpoint folder
        or repository."""
        if checkpoint is not None and not os.path.isdir(checkpoint):
            checkpoint = os.path.dirname(os.fspath(checkpoint)) or "."
        path = resolve_file(config.tokenizer_name, checkpoint, hf_repo)
        tokenizer = cls(path, (config.existing_text_padding_id,
                               config.existing_text_end_padding_id))
        if tokenizer.vocab_size != config.text_card:
            raise CheckpointError(f"tokenizer {path} has {tokenizer.vocab_size} pieces, the "
                                  f"model's text_card is {config.text_card}")
        return tokenizer

    @property
    def vocab_size(self) -> int:
        return self.sp.vocab_size()

    @property
    def pieces(self) -> list[str]:
        """Display text of every token id."""
        return list(self._pieces)

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def piece(self, token: int) -> str:
        """Display text of one token of the text stream: "" for hidden markers and ids outside
        the vocabulary (the zero token -1, the initial token), "▁" shown as a space."""
        return self._pieces[token] if 0 <= token < len(self._pieces) else ""

    def display(self, tokens: Iterable[int]) -> str:
        return "".join(self.piece(int(t)) for t in tokens)

    def _display(self, token: int) -> str:
        if token in self.hidden:
            return ""
        return self.sp.id_to_piece(token).replace(_WORD_START, " ")
