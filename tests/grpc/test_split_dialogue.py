"""A dialogue server whose codec and LM are other servers (``serve --services dialogue
--mimi-address --lm-address``): it admits as many dialogues as its backends do and refuses the
rest with RESOURCE_EXHAUSTED at once, and its health follows its backends' (issue 14, item 5)."""

import contextlib
import dataclasses
import socket
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
from tests.grpc.conftest import spawn_serve

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
FRAME = encode_pcm(np.zeros(1920, np.float32), PCM_F32LE)
CONFIG = dialogue_pb2.ConverseRequest(config=dialogue_pb2.DialogueConfig(
    input_encoding=PCM_F32LE, input_sample_rate_hertz=24_000, output_encoding=PCM_F32LE))


@dataclasses.dataclass
class Split:
    channel: grpc.Channel  # to the dialogue server
    backends: dict[str, MimiService | MoshiLMService]  # "mimi", "lm"
    addresses: dict[str, str]
    servers: dict[str, Server]  # the running server of each backend


@pytest.fixture
def split(tiny_mimi, tiny_lm):
    """Mimi and LM servers (4 codec slots, 2 LM slots) and a dialogue server over them."""
    with contextlib.ExitStack() as stack:
        backends = {"mimi": MimiService.create(tiny_mimi, max_sessions=4, idle_timeout=10),
                    "lm": MoshiLMService.create(tiny_lm, "tiny-random", max_sessions=2,
                                                idle_timeout=10)}
        running = Split(None, backends, {}, {})
        for name, service in backends.items():
            stack.callback(service.engine.stop)
            running.servers[name], port = create_server([service])
            running.addresses[name] = f"127.0.0.1:{port}"
            # The server of the end (a test may have replaced it).
            stack.callback(lambda name=name: running.servers[name].stop(None).wait())
        dialogue = DialogueService(
            RemoteMimi(create_channel(running.addresses["mimi"], backend=True)),
            RemoteLM(create_channel(running.addresses["lm"], backend=True)),
            running.addresses["mimi"], running.addresses["lm"])
        stack.callback(dialogue.close)
        server, port = create_server([dialogue])
        stack.callback(lambda: server.stop(None).wait())
        running.channel = create_channel(f"127.0.0.1:{port}")
        stack.callback(running.channel.close)
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


@pytest.mark.parametrize("backend", ["lm", "mimi"])
def test_health_is_not_serving_while_a_backend_is_down_and_serving_once_back(split, backend):
    stub = dialogue_pb2_grpc.DialogueStub(split.channel)
    wait_for_health(split.channel, SERVING, within=5)
    assert converse_once(stub) > 0
    split.servers[backend].stop(None).wait()  # the backend's server goes away
    wait_for_health(split.channel, NOT_SERVING, within=5)
    with pytest.raises(grpc.RpcError) as error:
        converse_once(stub)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    # Back, at the same address.
    split.servers[backend], _ = create_server([split.backends[backend]],
                                              split.addresses[backend])
    wait_for_health(split.channel, SERVING, within=10)
    assert converse_once(stub) > 0


def test_bad_audio_ends_a_split_dialogue_with_invalid_argument_and_frees_its_slots(split):
    stub = dialogue_pb2_grpc.DialogueStub(split.channel)
    for bad in (np.array([0, np.nan], "<f4").tobytes(), b"\0" * 7):
        requests = [CONFIG, dialogue_pb2.ConverseRequest(audio=FRAME),
                    dialogue_pb2.ConverseRequest(audio=bad)]
        with pytest.raises(grpc.RpcError) as error:  # never OK with fewer frames
            list(stub.Converse(iter(requests), timeout=30))
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Both slots are free again: two dialogues at once are admitted.
    held = [HeldDialogue(stub) for _ in range(2)]
    for dialogue in held:
        assert dialogue.first_frame().frame_index == 0
    for dialogue in held:
        dialogue.release()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serve_dialogue_only_started_before_its_lm_serves_once_the_lm_is_up(tiny_mimi, tiny_lm):
    """`serve --services dialogue --mimi-address --lm-address` as an operator starts it, with
    the LM server not up yet: it starts, reports NOT_SERVING, and SERVING once the LM is."""
    with contextlib.ExitStack() as stack:
        mimi = MimiService.create(tiny_mimi, max_sessions=2, idle_timeout=10)
        lm = MoshiLMService.create(tiny_lm, "tiny-random", max_sessions=2, idle_timeout=10)
        stack.callback(mimi.engine.stop)
        stack.callback(lm.engine.stop)
        mimi_server, mimi_port = create_server([mimi])
        stack.callback(lambda: mimi_server.stop(None).wait())
        lm_address = f"127.0.0.1:{free_port()}"
        process, port = spawn_serve("--services", "dialogue", "--mimi-address",
                                    f"127.0.0.1:{mimi_port}", "--lm-address", lm_address,
                                    "--drain-delay", "0", "--grace", "0")

        def end() -> None:
            process.terminate()
            process.wait(timeout=30)
            process.stderr.close()

        stack.callback(end)
        channel = create_channel(f"127.0.0.1:{port}")
        stack.callback(channel.close)
        wait_for_health(channel, NOT_SERVING, within=5)
        lm_server, _ = create_server([lm], lm_address)
        stack.callback(lambda: lm_server.stop(None).wait())
        wait_for_health(channel, SERVING, within=10)
        assert converse_once(dialogue_pb2_grpc.DialogueStub(channel)) > 0
