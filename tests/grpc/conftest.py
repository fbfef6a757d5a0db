"""Real servers on 127.0.0.1 port 0 with tiny random models, reached through real channels."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from services.core.grpc_server import ServerOptions, create_channel, create_server
from services.moshi_lm.generate import LMGenerator
from services.wiring import ModelOptions, close_all, load_lm_model, load_mimi_model

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_mimi():
    """The built-in tiny random Mimi, the one `serve` builds without a checkpoint."""
    return load_mimi_model(ModelOptions())


@pytest.fixture(scope="session")
def tiny_lm():
    """A generator over the built-in tiny random LM (Moshi layout: 8 + 8 codebooks, delays
    0/1), the one `serve` builds without a checkpoint."""
    model, _, _ = load_lm_model(ModelOptions())
    return LMGenerator(model)


@dataclasses.dataclass(frozen=True)
class Running:
    channel: grpc.Channel
    address: str
    http_port: int | None = None  # with http_address="127.0.0.1:0" among the options


@pytest.fixture
def start_server():
    """start_server(services, http_routes=(), **options) -> Running(channel, address,
    http_port) of a started server; servers, services and channels are torn down after the
    test."""
    with contextlib.ExitStack() as stack:

        def start(services, http_routes=(), **options):
            server, port = create_server(services, "127.0.0.1:0", ServerOptions(**options),
                                         http_routes=http_routes)
            stack.callback(lambda: close_all(services))
            stack.callback(lambda: server.stop(None))
            address = f"127.0.0.1:{port}"
            channel = create_channel(address)
            stack.callback(channel.close)
            return Running(channel, address, server.http_port)

        yield start


def spawn_serve(*args: str) -> tuple[subprocess.Popen, str]:
    """A `moshi-services serve --port 0 ARGS` process of this checkout, once it says it is
    serving, and its port (stderr left open for the rest of its lines). With ``--http-port``
    the HTTP side's port is ``process.http_port``."""
    process = subprocess.Popen(
        [sys.executable, "-c", "from cli.serve import serve; serve()", "--port", "0", *args],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=subprocess.PIPE,
        text=True)
    port = process.http_port = None
    for line in process.stderr:
        if match := re.search(r"listening on [\d.]+:(\d+)", line):
            port = match[1]
        if match := re.search(r"http on https?://[\d.]+:(\d+)/", line):
            process.http_port = int(match[1])
        if line.startswith("serving"):
            break
    return process, port
