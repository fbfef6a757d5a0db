"""Kyutai's own chat client, ``python -m moshi.client`` (the ``moshi`` package from PyPI), run
headless against our /api/chat.

It reads the microphone and plays to the speakers through PortAudio (``sounddevice``), so it
runs with ``HOME`` pointing at a folder whose ``.asoundrc`` makes ALSA's default device a file
plugin over the null device: capture reads a FIFO that ``Feeder`` fills with a clip at
real-time pace, playback writes a FIFO that ``Drain`` empties at real-time pace (the null
device alone does not pace: the client would spin). Its printed text (stdout is not a
terminal, so it prints the raw tokens) is what the test compares.

Its own venv, built on first use (and by ``.ci/run``: ``python3 -m tests.kyutai.moshi_client``)
under ~/.cache/moshi-services-test: ``moshi`` pins a torch older than ours and the client only
imports it, so the venv sees the system's packages (torch, numpy, aiohttp, sphn) and adds
moshi, sounddevice and einops without their dependencies. PortAudio itself is a system
library (apt: libportaudio2).
"""

from __future__ import annotations

import ctypes.util
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

VENV = Path.home() / ".cache" / "moshi-services-test" / "moshi-client"
PACKAGES = ("moshi==0.2.13", "sounddevice==0.5.0", "einops==0.8.1")
FRAME = 1920

ASOUNDRC = """\
pcm.!default {{
  type asym
  playback.pcm "moshi_out"
  capture.pcm "moshi_in"
}}
pcm.moshi_out {{
  type file
  slave.pcm "moshi_null"
  file "{playback}"
  format "raw"
}}
pcm.moshi_in {{
  type file
  slave.pcm "moshi_null"
  file "/dev/null"
  infile "{fifo}"
  format "raw"
}}
pcm.moshi_null {{
  type null
}}
"""


class ClientUnavailable(RuntimeError):
    """The client's venv or PortAudio cannot be had here (said, never skipped)."""


def python() -> Path:
    """The venv's python, the venv built if absent; ClientUnavailable saying why not."""
    if ctypes.util.find_library("portaudio") is None:
        raise ClientUnavailable("PortAudio is missing: apt-get install libportaudio2")
    interpreter = VENV / "bin" / "python"
    check = [str(interpreter), "-c", "import moshi.client, sounddevice"]
    if interpreter.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return interpreter
    steps = [[sys.executable, "-m", "venv", "--system-site-packages", "--clear", str(VENV)],
             [str(interpreter), "-m", "pip", "install", "--quiet", "--no-deps", *PACKAGES],
             check]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode:
            raise ClientUnavailable(f"building {VENV} failed at {' '.join(step)}:\n"
                                    f"{done.stderr[-2000:]}")
    return interpreter


class Feeder(threading.Thread):
    """Writes ``pcm`` (float32, 24 kHz) into the capture FIFO one 80 ms frame per 80 ms.
    PortAudio opens and closes the device while it probes: on a broken pipe the clip starts
    again, so the stream that stays open hears it from its first sample."""

    def __init__(self, fifo: Path, pcm: np.ndarray):
        super().__init__(daemon=True, name="alsa-feeder")
        self.fifo, self.pcm = fifo, pcm.astype("<f4")
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with open(self.fifo, "wb") as pipe:
                    for start in range(0, len(self.pcm), FRAME):
                        if self.stop.is_set():
                            return
                        pipe.write(self.pcm[start:start + FRAME].tobytes())
                        pipe.flush()
                        time.sleep(FRAME / 24000)
                return
            except BrokenPipeError:
                continue


class Drain(threading.Thread):
    """Reads the playback FIFO one 80 ms float32 frame per 80 ms (what the client plays)."""

    def __init__(self, fifo: Path):
        super().__init__(daemon=True, name="alsa-drain")
        self.fifo = fifo
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            with open(self.fifo, "rb") as pipe:
                while not self.stop.is_set() and pipe.read(FRAME * 4):
                    time.sleep(FRAME / 24000)


class Client:
    """``python -m moshi.client`` against 127.0.0.1:``port``, hearing ``pcm``; its stdout
    (the text it prints) collected in ``printed``, its stderr in ``home/client.log``."""

    def __init__(self, home: Path, port: int, pcm: np.ndarray):
        interpreter = python()
        capture, playback = home / "capture.fifo", home / "playback.fifo"
        os.mkfifo(capture)
        os.mkfifo(playback)
        (home / ".asoundrc").write_text(ASOUNDRC.format(fifo=capture, playback=playback))
        self.log = home / "client.log"
        self.feeder, self.drain = Feeder(capture, pcm), Drain(playback)
        self.feeder.start()
        self.drain.start()
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [str(interpreter), "-m", "moshi.client", "--host", "127.0.0.1", "--port",
                 str(port)],
                env={**os.environ, "HOME": str(home), "PYTHONUNBUFFERED": "1"},
                stdout=subprocess.PIPE, stderr=log)
        self.printed = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for byte in iter(lambda: self.process.stdout.read(1), b""):
            self.printed += byte

    def stop(self) -> str:
        """Ends the client; the tail of its log."""
        self.feeder.stop.set()
        self.drain.stop.set()
        self.process.terminate()
        self.process.wait(30)
        self._reader.join(10)
        return self.log.read_text(errors="replace")[-3000:]


if __name__ == "__main__":  # .ci/run builds the venv ahead of the tests
    print(python())
