"""The server's thread count does not grow with its sessions: a `serve` process (built-in
tiny models) holds as many threads with 64 concurrent dialogue, ASR and TTS sessions as
with one."""

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from services.core.grpc_server import create_channel
from tests.grpc.conftest import spawn_serve
from tests.grpc.test_serve_speech import converse, recognize, synthesize


def thread_count(pid: int) -> int:
    return int(re.search(r"Threads:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())[1])


def peak_threads(pid: int, channel, sessions: int) -> int:
    """The server's highest thread count while ``sessions`` mixed sessions run at once."""
    peak, done = [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], thread_count(pid))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    kinds = [recognize, synthesize, converse]
    try:
        with ThreadPoolExecutor(sessions) as pool:
            results = list(pool.map(lambda k: kinds[k % 3](channel, k % 8), range(sessions)))
    finally:
        done.set()
        sampler.join()
    assert all(results)
    return peak[0]


def test_thread_count_is_independent_of_the_number_of_sessions():
    process, port = spawn_serve("--threads", "1", "--max-sessions", "64",
                                "--asr-text-delay", "3", "--tts-audio-delay", "4")
    try:
        with create_channel(f"127.0.0.1:{port}") as channel:
            one = peak_threads(process.pid, channel, 1)
            many = peak_threads(process.pid, channel, 64)
        assert many == one, (one, many)
    finally:
        process.terminate()
        process.wait(timeout=20)
