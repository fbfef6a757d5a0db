"""A dialogue server whose codec and LM are other servers (``serve --services dialogue
--mimi-address --lm-address``): it admits as many dialogues as its backends do and refuses the
rest with RESOURCE_EXHAUSTED at once, and its health follows its backends' (issue 14, item 5)."""

import contextlib
import dataclasses
import threading
import time

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from services.core.common_pb2 import PCM_F32LE
from services.core.grpc_server import Server, create_channel, create_server
from services.core.pcm import encode_pcm
from services.dialogue import dialogue_pb2, dialogue_pb2_grpc
from services.dialogue.service import DialogueService
from services.mimi.client import RemoteMimi
from services.mimi.service import MimiService
from services.moshi_lm.client import RemoteLM
from services.moshi_lm.service import MoshiLMService

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
FRAME = encode_pcm(np.zeros(1920, np.float32), PCM_F32LE)
CONFIG = dialogue_pb2.ConverseRequest(config=dialogue_pb2.DialogueConfig(
    input_encoding=PCM_F32LE, input_sample_rate_hertz=24_000, output_encoding=PCM_F32LE))


@dataclasses.dataclass
class Split:
    channel: grpc.Channel  # to the dialogue server
    lm: MoshiLMService
    lm_address: str
    lm_server: Server


@pytest.fixture
def split(tiny_mimi, tiny_lm):
    """Mimi and LM servers (2 LM slots, 4 codec slots) and a dialogue server over them."""
    with contextlib.ExitStack() as stack:
        mimi = MimiService.create(tiny_mimi, max_sessions=4, idle_timeout=10)
        lm = MoshiLMService.create(tiny_lm, "tiny-random", max_sessions=2, idle_timeout=10)
        stack.callback(mimi.engine.stop)
        stack.callback(lm.engine.stop)
        mimi_server, mimi_port = create_server([mimi])
        stack.callback(lambda: mimi_server.stop(None).wait())
        lm_server, lm_port = create_server([lm])
        mimi_address, lm_address = f"127.0.0.1:{mimi_port}", f"127.0.0.1:{lm_port}"
        dialogue = DialogueService(RemoteMimi(create_channel(mimi_address, backend=True)),
                                   RemoteLM(create_channel(lm_address, backend=True)),
                                   mimi_address, lm_address)
        stack.callback(dialogue.close)
        server, port = create_server([dialogue])
        stack.callback(lambda: server.stop(None).wait())
        channel = create_channel(f"127.0.0.1:{port}")
        stack.callback(channel.close)
        running = Split(channel, lm, lm_address, lm_server)
        stack.callback(lambda: running.lm_server.stop(None).wait())  # the LM server of the end
        yield running


def health_of(channel, service: str = "") -> int:
    return health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=1.0).status


def wait_for_health(channel, status: int, within: float) -> float:
    """Seconds until both the server's and the dialogue's health are ``status``."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        if health_of(channel) == status == health_of(channel, DialogueService.name):
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"health not {health_pb2.HealthCheckResponse.ServingStatus.Name(status)}"
                         f" within {within} s")


class HeldDialogue:
    """A Converse call that sends 3 frames, then holds its slot until ``release``."""

    def __init__(self, stub):
        self._release = threading.Event()
        self.call = stub.Converse(self._requests())

    def _requests(self):
        yield CONFIG
        for _ in range(3):
            yield dialogue_pb2.ConverseRequest(audio=FRAME)
        self._release.wait()

    def first_frame(self) -> dialogue_pb2.ConverseResponse:
        return next(self.call)

    def release(self) -> None:
        self._release.set()
        list(self.call)


def converse_once(stub) -> int:
    requests = [CONFIG] + [dialogue_pb2.ConverseRequest(audio=FRAME)] * 3
    return len(list(stub.Converse(iter(requests), timeout=30)))


def test_dialogues_beyond_the_backends_capacity_are_refused_at_once(split):
    stub = dialogue_pb2_grpc.DialogueStub(split.channel)
    held = [HeldDialogue(stub) for _ in range(2)]  # the LM backend's 2 slots
    for dialogue in held:
        assert dialogue.first_frame().frame_index == 0
    # 18 more, as a client flood would: each refused at once, none queued behind the two.
    for _ in range(18):
        with pytest.raises(grpc.RpcError) as error:
            converse_once(stub)
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "all 2 dialogue slots are taken" in error.value.details()
    (detail,) = rpc_status.from_call(error.value).details
    assert detail.Unpack(error_details_pb2.RetryInfo())
    started = time.monotonic()
    assert health_of(split.channel) == SERVING
    assert time.monotonic() - started < 1.0
    for dialogue in held:
        dialogue.release()
    assert converse_once(stub) > 0  # the slots came back


def test_health_is_not_serving_while_the_lm_backend_is_down_and_serving_once_back(split):
    stub = dialogue_pb2_grpc.DialogueStub(split.channel)
    wait_for_health(split.channel, SERVING, within=5)
    assert converse_once(stub) > 0
    split.lm_server.stop(None).wait()  # the LM server goes away
    wait_for_health(split.channel, NOT_SERVING, within=5)
    with pytest.raises(grpc.RpcError) as error:
        converse_once(stub)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    split.lm_server, _ = create_server([split.lm], split.lm_address)  # back, same address
    wait_for_health(split.channel, SERVING, within=10)
    assert converse_once(stub) > 0
