"""An ASR stream on a Moshi-architecture LM's engine (``DelayedTextASR``): code frames,
Markers and Flush in, ``ASRTick``s out, like a session of the ASR engine, so the recognition
pipeline and service run unchanged next to dialogue sessions on one loaded LM.

The LM engine takes one step input per output; the words are decoded here, on the consumer's
thread, from the de-delayed text of each frame.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from services.asr.delayed_text import DelayedTextASR
from services.asr.recognizer import ASROutput, ASRSession
from services.asr.stepper import ASRTick, Flush, Marker, merge_outputs
from services.asr.timing import SttTiming
from services.core.engine import Engine, EngineError
from services.moshi_lm.generate import SamplingSettings

_END = object()


class LMRecognitionStream:
    def __init__(self, engine: Engine, mode: DelayedTextASR, settings: SamplingSettings,
                 decode: Callable[[Sequence[int]], str]):
        self.mode = mode
        self._lm = engine.open(mode.stream(settings))
        # De-delayed frame i is input frame i: times need no offset (see delayed_text).
        self.words = ASRSession(decode, SttTiming(0.0))
        self._expected: queue.Queue = queue.Queue()  # what each input will give, in order
        self._sent = 0

    def send(self, item: np.ndarray | Marker | Flush) -> None:
        if isinstance(item, np.ndarray):
            inputs = self.mode.step_inputs(item, first=self._sent == 0)
            self._sent += 1
            self._expected.put(len(inputs))
            for step in inputs:
                self._lm.send(step)
        else:
            self._expected.put(item)

    def finish(self) -> None:
        self._expected.put(_END)
        self._lm.finish()

    def __iter__(self) -> Iterator[ASRTick]:
        frames = 0
        while (item := self._expected.get()) is not _END:
            if isinstance(item, Marker):
                yield ASRTick(None, item.id, frames)
            elif isinstance(item, Flush):
                yield ASRTick(self.words.flush(), frames=frames)
            else:
                outputs = [self._lm.receive() for _ in range(item)]
                frames += 1
                yield ASRTick(self._decode(outputs), frames=frames)

    def close(self, error: EngineError | None = None) -> None:
        self._expected.put(_END)
        self._lm.close(error)

    def _decode(self, frames: list) -> ASROutput:
        output = ASROutput(-1, [], None, False, False)
        for frame in frames:
            if frame is not None:  # inside the LM's delay: no text yet
                output = merge_outputs(output, self.words.output(frame.text_token, None))
        return output
