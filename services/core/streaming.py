"""The streaming-state contract shared by every stateful module.

A streaming module never keeps state on itself. The caller creates a state for B independent
sessions with ``module.init_state(batch_size, device)``, passes it to every call together with an
optional boolean ``active`` mask [B] (inactive sessions compute garbage that the module does not
store), and resets sessions one by one with ``state.reset(mask)``.

States are dataclasses whose tensor fields are batch first. ``reset`` and ``snapshot`` /
``restore`` walk the fields, so a module only declares what its state holds and how a fresh
session looks.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch
from torch import Tensor


@dataclasses.dataclass
class StreamingState:
    """Base class of every module state.

    Tensor fields are batch first. A field's fresh value is ``0`` unless the subclass names
    another in ``fresh_values`` (a dict field name -> scalar). Fields that are themselves states
    (or lists of states) are reset recursively. Non-tensor fields are left alone.
    """

    @property
    def fresh_values(self) -> dict[str, Any]:
        return {}

    @property
    def batch_dims(self) -> dict[str, int]:
        """Fields whose session dimension is not the first one (e.g. per-layer stacks)."""
        return {}

    def reset(self, mask: Tensor | None = None) -> None:
        """Returns the sessions selected by ``mask`` [B] (all when None) to their fresh state."""
        fresh, batch_dims = self.fresh_values, self.batch_dims
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, Tensor):
                fill = fresh.get(field.name, 0)
                if mask is None:
                    value.fill_(fill)
                else:
                    dim = batch_dims.get(field.name, 0)
                    value.masked_fill_(_broadcast_mask(mask, value, dim), fill)
            else:
                for child in _child_states(value):
                    child.reset(mask)

    def first_sessions(self, n: int) -> StreamingState:
        """A state of the first ``n`` sessions that shares this one's memory (views): a step on
        it updates these rows in place. A serving engine fills low slots first and steps only
        the rows up to its highest busy slot, so idle capacity costs nothing."""
        return _first_sessions(self, n, 0)

    def snapshot(self) -> StreamingState:
        """A deep copy, to restore later with ``restore``."""
        return copy.deepcopy(self)

    def restore(self, snapshot: StreamingState) -> None:
        """Copies ``snapshot``'s values into this state, in place."""
        for field in dataclasses.fields(self):
            mine, theirs = getattr(self, field.name), getattr(snapshot, field.name)
            if isinstance(mine, Tensor):
                mine.copy_(theirs)
            elif isinstance(mine, StreamingState):
                mine.restore(theirs)
            elif isinstance(mine, (list, tuple)) and mine and isinstance(mine[0], StreamingState):
                for a, b in zip(mine, theirs, strict=True):
                    a.restore(b)
            else:
                setattr(self, field.name, copy.deepcopy(theirs))


def _first_sessions(value: Any, n: int, dim: int) -> Any:
    """Views of the first ``n`` sessions of a tensor, a state, any dataclass of per-session
    tensors (e.g. sampling settings) or a list of them; other values are shared as they are."""
    if isinstance(value, Tensor):
        return value.narrow(dim, 0, n)
    if isinstance(value, (list, tuple)):
        return type(value)(_first_sessions(v, n, 0) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        dims = value.batch_dims if isinstance(value, StreamingState) else {}
        return dataclasses.replace(value, **{
            f.name: _first_sessions(getattr(value, f.name), n, dims.get(f.name, 0))
            for f in dataclasses.fields(value) if f.init})
    return value


def _child_states(value: Any) -> list[StreamingState]:
    if isinstance(value, StreamingState):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, StreamingState)]
    return []


def _broadcast_mask(mask: Tensor, like: Tensor, dim: int = 0) -> Tensor:
    """Views a per-session mask [B] so it broadcasts against ``like``, sessions on ``dim``."""
    shape = [1] * like.dim()
    shape[dim] = -1
    return mask.view(shape).to(like.device)


def masked_update(target: Tensor, new: Tensor, active: Tensor | None) -> None:
    """Writes ``new`` into ``target`` in place, only for the active sessions (dim 0).
    ``new`` must not share memory with ``target`` (it is a fresh tensor at every caller)."""
    if active is None:
        target.copy_(new)
    else:
        # Selected straight into the target (each element reads only its own old value): one
        # pass and one call, instead of a temporary and a copy back.
        torch.where(_broadcast_mask(active, target), new, target, out=target)
