"""Voice activity and end of turn from the recogniser's pause-prediction heads
(docs/architecture.md §3.4).

Kyutai's STT-1B has 4 extra heads, each a softmax over 6 values computed at every step;
``prob[0]`` of head i is a pause probability (Kyutai's server streams these four numbers every
step). Their reference example declares the end of a turn when head 2's ``prob[0]`` exceeds
0.5. We report it once per turn: a turn begins with the first word after the previous end of
turn, so silence before anyone spoke never ends a turn.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

END_OF_TURN_HEAD = 2
END_OF_TURN_THRESHOLD = 0.5


def pause_probabilities(head_probs: Tensor) -> Tensor:
    """[..., num_heads, head_dim] softmax outputs -> [..., num_heads] pause probabilities."""
    return head_probs[..., 0]


def extra_head_probabilities(logits: Tensor) -> Tensor:
    """Softmax over each head's outputs, in float32: [..., num_heads, head_dim]."""
    return torch.softmax(logits.float(), dim=-1)


@dataclasses.dataclass
class TurnDetector:
    """Per-session end-of-turn state."""

    head: int = END_OF_TURN_HEAD
    threshold: float = END_OF_TURN_THRESHOLD
    in_turn: bool = False  # a word was heard since the last end of turn

    def speech(self) -> bool:
        """Call when a word starts; True when it begins a turn (voice activity begins)."""
        began = not self.in_turn
        self.in_turn = True
        return began

    def update(self, pauses: Tensor | list[float]) -> bool:
        """Call every step with that step's pause probabilities [num_heads]; True when the
        turn ends at this step."""
        if self.in_turn and float(pauses[self.head]) > self.threshold:
            self.in_turn = False
            return True
        return False
