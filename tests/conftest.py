"""Shared by every test: the fixtures folder, its golden files, and one torch thread."""

import contextlib
import json
import shutil
import threading
from collections.abc import Callable, Hashable
from pathlib import Path

import numpy as np
import pytest
import torch

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a loaded 2-core machine the
    thread hand-offs cost a scheduler slice per op (~80x slower steps measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def load_golden(name: str) -> dict[str, torch.Tensor]:
    """The arrays of the golden file ``name``.npz as tensors (its "meta" left out)."""
    with np.load(FIXTURES / f"{name}.npz") as data:
        return {k: torch.from_numpy(data[k]) for k in data.files if k != "meta"}


def golden_checkpoint(folder: Path, name: str) -> str:
    """The golden LM checkpoint ``name`` laid out as Kyutai ships one, in ``folder``/``name``:
    config.json + model.safetensors."""
    folder = folder / name
    folder.mkdir()
    shutil.copy(FIXTURES / f"{name}.safetensors", folder / "model.safetensors")
    config = json.loads((FIXTURES / f"{name}.json").read_text())["config"]
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


@contextlib.contextmanager
def tiny_moshi_server(speech_service):
    """A real server (127.0.0.1, free port) with the tiny Mimi and Moshi LM on one engine
    (3 LM sessions, delays up to 8), the dialogue, and the service
    ``speech_service(engine, lm_config)`` builds on that engine. Yields (channel, generator,
    mimi, engine)."""
    from services.core.grpc_server import ServerOptions, create_channel, create_server
    from services.core.tick import speech_engine
    from services.dialogue.service import DialogueService
    from services.mimi.loading import build_random_mimi
    from services.mimi.service import MimiService
    from services.moshi_lm.config import preset
    from services.moshi_lm.generate import LMGenerator
    from services.moshi_lm.loader import prepare_for_inference
    from services.moshi_lm.model import LMModel
    from services.moshi_lm.service import MoshiLMService
    from services.wiring import close_all

    torch.manual_seed(0)
    generator = LMGenerator(prepare_for_inference(LMModel(preset("tiny"))))
    mimi = build_random_mimi(seed=0, num_codebooks=8)
    engine = speech_engine(3, generator, mimi, max_delay=8)
    codec, lm = MimiService(mimi, engine), MoshiLMService(generator, engine, "tiny")
    services = [codec, lm, DialogueService(codec, lm), speech_service(engine, generator.cfg)]
    server, port = create_server(services, "127.0.0.1:0", ServerOptions())
    channel = create_channel(f"127.0.0.1:{port}")
    try:
        yield channel, generator, mimi, engine
    finally:
        channel.close()
        server.stop(None)
        close_all(services)


def concurrently(calls: dict[Hashable, Callable[[], object]]) -> dict[Hashable, object]:
    """Runs each call on a thread of its own, all at once (sessions that share an engine's
    ticks, or concurrent RPCs); returns their results by key."""
    results = {}

    def run(key):
        results[key] = calls[key]()
    threads = [threading.Thread(target=run, args=(key,)) for key in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def run_alone(mode, inputs, lm=None, codec=None, max_delay: int | None = None,
              **temporal_options):
    """The outputs of one session of ``mode`` run alone on a fresh one-session engine (the
    reference a session sharing a batch must equal)."""
    from services.core.engine import run_session
    from services.core.tick import speech_engine

    engine = speech_engine(1, lm, codec, max_delay=max_delay, **temporal_options)
    try:
        return run_session(engine.open(mode), inputs)
    finally:
        engine.stop()
