import dataclasses

import torch

from services.core.streaming import StreamingState, masked_update


@dataclasses.dataclass
class Child(StreamingState):
    buffer: torch.Tensor

    @property
    def fresh_values(self):
        return {"buffer": 7}


@dataclasses.dataclass
class Parent(StreamingState):
    count: torch.Tensor
    stack: torch.Tensor  # sessions on dim 1
    children: list

    @property
    def batch_dims(self):
        return {"stack": 1}


def _state() -> Parent:
    return Parent(count=torch.arange(3), stack=torch.ones(2, 3, 4),
                  children=[Child(torch.zeros(3, 2)), Child(torch.zeros(3, 1))])


def test_reset_by_mask_recurses_and_respects_batch_dim():
    state = _state()
    state.reset(torch.tensor([False, True, False]))
    assert state.count.tolist() == [0, 0, 2]
    assert state.stack[:, 1].abs().sum() == 0 and state.stack[:, 0].min() == 1
    assert state.children[0].buffer[1].tolist() == [7, 7]
    assert state.children[1].buffer[0].tolist() == [0]


def test_snapshot_restore():
    state = _state()
    snap = state.snapshot()
    state.reset()
    assert state.count.sum() == 0
    state.restore(snap)
    assert state.count.tolist() == [0, 1, 2]
    assert state.children[0].buffer.sum() == 0


def test_masked_update_only_touches_active():
    target = torch.zeros(3, 2)
    masked_update(target, torch.ones(3, 2), torch.tensor([True, False, True]))
    assert target.sum(dim=1).tolist() == [2, 0, 2]
    masked_update(target, torch.full((3, 2), 5.0), None)
    assert target.min() == 5


def test_first_sessions_are_views_that_update_in_place():
    state = _state()
    head = state.first_sessions(2)
    assert head.count.tolist() == [0, 1]
    assert head.stack.shape == (2, 2, 4)
    assert head.children[0].buffer.shape == (2, 2)
    head.count += 10
    head.children[1].buffer.fill_(3)
    head.reset(torch.tensor([False, True]))
    assert state.count.tolist() == [10, 0, 2]
    assert state.children[1].buffer[:, 0].tolist() == [3, 7, 0]  # row 1 reset to fresh
    assert state.stack[:, 1].abs().sum() == 0 and state.stack[:, 2].min() == 1
