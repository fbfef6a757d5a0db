"""Real servers on 127.0.0.1 port 0 with tiny random models, reached through real channels."""

from __future__ import annotations

import contextlib

import pytest
import torch

from services.core.grpc_server import ServerOptions, create_channel, create_server
from services.mimi import build_random_mimi


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a loaded 2-core machine the
    thread hand-offs cost a scheduler slice per op (~80x slower steps measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_mimi():
    return build_random_mimi("tiny", seed=0)


@pytest.fixture
def start_server():
    """start_server(services, **options) -> channel to a started server; all torn down after."""
    with contextlib.ExitStack() as stack:

        def start(services, **options):
            server, port = create_server(services, "127.0.0.1:0", ServerOptions(**options))
            stack.callback(lambda: [s.close() for s in services])
            stack.callback(lambda: server.stop(None))
            channel = create_channel(f"127.0.0.1:{port}")
            stack.callback(channel.close)
            return channel

        yield start
