"""NVIDIA Riva's ``RivaSpeechSynthesis`` (protos/riva/riva_tts.proto) over our TTS service:
Riva requests are translated into ``services.tts`` requests, run by the same ``TTSService``
(same engine, sessions, resampling and status codes), and its chunks returned as Riva
responses. Nothing here synthesizes anything.

Mapping (what Riva clients rely on):

- LINEAR_PCM (or unset) is raw s16le mono at ``sample_rate_hz`` (22050, 44100 and 16000 are
  common; 0: 24000), resampled by the TTS service; no WAV header;
- ``voice_name``: one of the server's voices, as GetRivaSynthesisConfig lists them
  (``moshi-services.<voice>`` or ``<voice>``); any other name (``Magpie-Multilingual.EN-US.Aria``)
  falls back to the default voice. ``language_code`` is accepted and not used;
- SynthesizeOnline takes the config and a text chunk in every request (Riva 2.27 streams
  them; older clients send one request and half-close): chunks are joined by a space, each
  being a whole piece of text, and half-closing ends the text;
- word timings (``enable_word_time_offsets``) in milliseconds: a word ends where the next
  starts, the last one at the end of the audio, so a word is sent once the next has come;
- ``custom_configuration["seed"]`` seeds the random draws (unset: 0, as our own TTS).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from services.core.common_pb2 import PCM_S16LE
from services.core.engine import Engine, InvalidInput
from services.core.grpc_stream import abort
from services.core.validation import check_seed
from services.riva import riva_audio_pb2, riva_tts_pb2, riva_tts_pb2_grpc
from services.tts import tts_pb2
from services.tts.conditioning import list_voices
from services.tts.service import TTSService

SERVICE_NAME = riva_tts_pb2.DESCRIPTOR.services_by_name["RivaSpeechSynthesis"].full_name
# GetRivaSynthesisConfig's voice_name: full voice names are "<VOICE_NAME>.<subvoice>".
VOICE_NAME = "moshi-services"
DEFAULT_SUBVOICE = "default"
LANGUAGE = "en-US"


def milliseconds(seconds: float) -> int:
    return round(seconds * 1000)


class WordTimes:
    """Our word starts -> Riva word timings: a word is told once its end (the next word's
    start, or the end of the audio) is known."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._pending: tts_pb2.WordTiming | None = None

    def push(self, words) -> list[riva_tts_pb2.WordTiming]:
        out = []
        for word in words:
            if self._pending is not None:
                out.append(self._timing(self._pending, word.start_seconds))
            self._pending = word
        return out if self.enabled else []

    def end(self, audio_seconds: float) -> list[riva_tts_pb2.WordTiming]:
        pending, self._pending = self._pending, None
        if pending is None or not self.enabled:
            return []
        return [self._timing(pending, max(audio_seconds, pending.start_seconds))]

    @staticmethod
    def _timing(word, end: float) -> riva_tts_pb2.WordTiming:
        return riva_tts_pb2.WordTiming(word=word.text, start_time=milliseconds(word.start_seconds),
                                       end_time=milliseconds(end))


class RivaTTSService(riva_tts_pb2_grpc.RivaSpeechSynthesisServicer):
    name = SERVICE_NAME

    def __init__(self, tts: TTSService):
        self.tts = tts

    def voices(self) -> list[str]:
        return list_voices(self.tts.voices_dir) if self.tts.voices_dir is not None else []

    def config(self, request: riva_tts_pb2.SynthesizeSpeechRequest) -> tts_pb2.SynthesisConfig:
        """Our synthesis config for a Riva request (InvalidInput says what cannot be done)."""
        if request.encoding not in (riva_audio_pb2.ENCODING_UNSPECIFIED,
                                    riva_audio_pb2.LINEAR_PCM):
            name = riva_audio_pb2.AudioEncoding.Name(request.encoding) \
                if request.encoding in riva_audio_pb2.AudioEncoding.values() \
                else str(request.encoding)
            raise InvalidInput(f"unsupported audio encoding {name}: this server sends "
                               "LINEAR_PCM")
        if request.zero_shot_data.audio_prompt:
            raise InvalidInput("zero-shot voice prompts are not supported: pick a voice of "
                               "GetRivaSynthesisConfig")
        config = tts_pb2.SynthesisConfig(voice=self._voice(request.voice_name),
                                         encoding=PCM_S16LE,
                                         sample_rate_hertz=request.sample_rate_hz)
        if "seed" in request.custom_configuration:
            text = request.custom_configuration["seed"]
            try:
                config.seed = check_seed(int(text))
            except ValueError:
                raise InvalidInput(f"custom_configuration seed must be an integer, got "
                                   f"{text!r}") from None
        return config

    def _voice(self, name: str) -> str:
        """One of our voices, or "" (the default) for any name that is not one."""
        name = name.removeprefix(f"{VOICE_NAME}.")
        return name if name in self.voices() else ""

    # ---- GrpcService ------------------------------------------------------------------------

    def add_to_server(self, server) -> None:
        riva_tts_pb2_grpc.add_RivaSpeechSynthesisServicer_to_server(self, server)

    def engines(self) -> list[Engine]:
        return self.tts.engines()

    def warm_up(self) -> None:
        """Nothing of its own: the TTS service it adapts warms the engine up."""

    def close(self) -> None:
        """Nothing of its own."""

    # ---- RPCs -------------------------------------------------------------------------------

    async def GetRivaSynthesisConfig(self, request, context):
        subvoices = [DEFAULT_SUBVOICE, *self.voices()]
        parameters = {"language_code": LANGUAGE, "voice_name": VOICE_NAME,
                      "subvoices": ",".join(f"{v}:{i}" for i, v in enumerate(subvoices)),
                      "sample_rate": "24000"}
        return riva_tts_pb2.RivaSynthesisConfigResponse(model_config=[
            riva_tts_pb2.RivaSynthesisConfigResponse.Config(
                model_name=self.tts.model_name, parameters=parameters)])

    async def Synthesize(self, request, context):
        try:
            config = self.config(request)
        except InvalidInput as error:
            await abort(context, error)
        response = await self.tts.Synthesize(
            tts_pb2.SynthesizeRequest(config=config, text=request.text), context)
        times = WordTimes(request.enable_word_time_offsets)
        words = times.push(response.words) + times.end(response.audio_seconds)
        meta = riva_tts_pb2.SynthesizeSpeechResponseMetadata(
            text=request.text, processed_text=request.text, words=words)
        return _with_id(riva_tts_pb2.SynthesizeSpeechResponse(audio=response.audio, meta=meta),
                        request)

    async def SynthesizeOnline(self, request_iterator, context):
        firsts: list[riva_tts_pb2.SynthesizeSpeechRequest] = []
        requests = self._our_requests(request_iterator, firsts)
        times, audio_seconds = None, 0.0
        async for chunk in self.tts.StreamingSynthesize(requests, context):
            times = times or WordTimes(firsts[0].enable_word_time_offsets)
            words, audio_seconds = times.push(chunk.words), chunk.audio_seconds
            if chunk.audio or words:
                yield self._response(chunk.audio, words, firsts[0])
        if times is not None and (words := times.end(audio_seconds)):
            yield self._response(b"", words, firsts[0])

    @staticmethod
    def _response(audio: bytes, words, first) -> riva_tts_pb2.SynthesizeSpeechResponse:
        meta = riva_tts_pb2.SynthesizeSpeechResponseMetadata(words=words)
        return _with_id(riva_tts_pb2.SynthesizeSpeechResponse(audio=audio, meta=meta), first)

    async def _our_requests(self, requests: AsyncIterator,
                            firsts: list[riva_tts_pb2.SynthesizeSpeechRequest]
                            ) -> AsyncIterator[tts_pb2.StreamingSynthesizeRequest]:
        """Riva's stream as ours: the first request's config, then every request's text.
        Half-closing ends our stream too, which ends the text."""
        first = await anext(requests, None)
        if first is None:
            raise InvalidInput("the stream ended before its first request")
        firsts.append(first)
        yield tts_pb2.StreamingSynthesizeRequest(config=self.config(first))
        separator = ""
        if first.text.strip():
            yield tts_pb2.StreamingSynthesizeRequest(text=first.text)
            separator = " "
        async for request in requests:
            if request.text.strip():
                yield tts_pb2.StreamingSynthesizeRequest(text=separator + request.text)
                separator = " "


def _with_id(response: riva_tts_pb2.SynthesizeSpeechResponse,
             request: riva_tts_pb2.SynthesizeSpeechRequest
             ) -> riva_tts_pb2.SynthesizeSpeechResponse:
    """``response`` with the request's id echoed, when it has one."""
    if request.HasField("id"):
        response.id.CopyFrom(request.id)
    return response
