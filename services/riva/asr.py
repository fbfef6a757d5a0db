"""NVIDIA Riva's ``RivaSpeechRecognition`` (protos/riva/riva_asr.proto) over our ASR service:
Riva requests are translated into ``services.asr`` requests, run by the same ``ASRService``
(same engine, sessions, validation and status codes), and its word events grouped into Riva
results. Nothing here recognises anything.

Mapping (what Riva clients rely on):

- the format comes from a WAV header at the start of the audio when there is one (whole
  files arrive with ``encoding`` 0 and ``sample_rate_hertz`` 0), else from the config
  (LINEAR_PCM, 16 kHz when unset); channels are mixed to mono;
- an utterance is the words between two of the model's ends of turn: at each end of turn a
  final result with its words; at half-close the model's delay is flushed and the rest comes
  as a last final. Models without pause prediction never end a turn: one final at the end;
- ``interim_results``: the utterance so far (final words and the word being heard) after
  each word event, ``is_final`` false;
- transcripts are the words joined by spaces and end with a space (clients concatenate the
  results); word times are integer milliseconds; confidences are 1.0 (the model's token
  probabilities are not exposed). A word still open at an end of turn ends at that time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from services.asr import asr_pb2
from services.asr.service import ASRService
from services.core.engine import Engine, InvalidInput
from services.core.grpc_stream import abort
from services.riva import riva_asr_pb2, riva_asr_pb2_grpc
from services.riva.audio import (
    AudioFormat,
    Downmix,
    config_format,
    looks_like_wav,
    parse_wav_header,
)

SERVICE_NAME = riva_asr_pb2.DESCRIPTOR.services_by_name["RivaSpeechRecognition"].full_name
Word = asr_pb2.Word


def milliseconds(seconds: float) -> int:
    return round(seconds * 1000)


def audio_format(config: riva_asr_pb2.RecognitionConfig, head: bytes) -> tuple[AudioFormat, int]:
    """(format, offset of the first sample in ``head``): the WAV header's when ``head`` has
    one, else the config's; InvalidInput for what cannot be decoded."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        parsed = parse_wav_header(head)
        if parsed is None:
            raise InvalidInput("the audio starts with an incomplete WAV header")
        return parsed
    return config_format(config.encoding, config.sample_rate_hertz,
                         config.audio_channel_count), 0


def our_config(fmt: AudioFormat, encoding: int) -> asr_pb2.RecognitionConfig:
    # Interim words always: the word still open at an end of turn belongs to its utterance.
    return asr_pb2.RecognitionConfig(encoding=encoding, sample_rate_hertz=fmt.sample_rate,
                                     interim_results=True)


class Utterances:
    """Our word and speech events of one stream -> Riva streaming results."""

    def __init__(self, interim: bool, word_times: bool, language: str):
        self.interim, self.word_times, self.language = interim, word_times, language
        self._final: list[Word] = []  # final words of the current utterance
        self._open: Word | None = None  # the word being heard (interim)
        self._sent_open: Word | None = None  # an open word already sent in a final
        self._processed = 0.0
        # Seconds of the client's audio so far: what is processed past it is the flush
        # silence, not the client's audio.
        self.received_seconds = 0.0

    def event(self, response: asr_pb2.StreamingRecognizeResponse
              ) -> list[riva_asr_pb2.StreamingRecognitionResult]:
        self._processed = min(response.audio_processed_seconds, self.received_seconds)
        kind = response.WhichOneof("event")
        if kind == "word":
            return self._word(response.word)
        if kind == "speech_event" and \
                response.speech_event.kind == asr_pb2.SpeechEvent.END_OF_TURN:
            return self._final_result(response.speech_event.time_seconds)
        return []

    def end(self) -> list[riva_asr_pb2.StreamingRecognitionResult]:
        """The last utterance once the stream has ended (every word final by then)."""
        return self._final_result(self._processed)

    def _word(self, word: Word) -> list[riva_asr_pb2.StreamingRecognitionResult]:
        if word.HasField("end_seconds"):
            sent, self._sent_open = self._sent_open, None
            if sent is not None and sent.start_seconds == word.start_seconds:
                return []  # its utterance has ended already
            self._final.append(word)
            self._open = None
        else:
            self._open = word
        if not self.interim:
            return []
        return [self._result(self._words(), is_final=False)]

    def _words(self) -> list[Word]:
        return self._final + ([self._open] if self._open is not None else [])

    def _final_result(self, time: float) -> list[riva_asr_pb2.StreamingRecognitionResult]:
        words = self._final[:]
        if self._open is not None:
            closed = Word(text=self._open.text, start_seconds=self._open.start_seconds,
                          end_seconds=max(self._open.start_seconds, time))
            words.append(closed)
            self._sent_open = self._open
        self._final, self._open = [], None
        return [self._result(words, is_final=True)] if words else []

    def _result(self, words: list[Word], is_final: bool
                ) -> riva_asr_pb2.StreamingRecognitionResult:
        return riva_asr_pb2.StreamingRecognitionResult(
            alternatives=[alternative(words, self.word_times, self.language)],
            is_final=is_final, stability=1.0 if is_final else 0.0,
            audio_processed=self._processed)


def alternative(words: list[Word], word_times: bool, language: str
                ) -> riva_asr_pb2.SpeechRecognitionAlternative:
    """Riva's alternative of ``words``: the transcript ends with a space."""
    transcript = "".join(f"{w.text} " for w in words)
    infos = [riva_asr_pb2.WordInfo(
        word=w.text, start_time=milliseconds(w.start_seconds),
        end_time=milliseconds(w.end_seconds if w.HasField("end_seconds") else w.start_seconds),
        confidence=1.0, language_code=language) for w in words] if word_times else []
    return riva_asr_pb2.SpeechRecognitionAlternative(
        transcript=transcript, confidence=1.0, words=infos,
        language_code=[language] if language else [])


class RivaASRService(riva_asr_pb2_grpc.RivaSpeechRecognitionServicer):
    name = SERVICE_NAME

    def __init__(self, asr: ASRService):
        self.asr = asr

    # ---- GrpcService ------------------------------------------------------------------------

    def add_to_server(self, server) -> None:
        riva_asr_pb2_grpc.add_RivaSpeechRecognitionServicer_to_server(self, server)

    def engines(self) -> list[Engine]:
        return self.asr.engines()

    def warm_up(self) -> None:
        """Nothing of its own: the ASR service it adapts warms the engine up."""

    def close(self) -> None:
        """Nothing of its own."""

    # ---- RPCs -------------------------------------------------------------------------------

    async def GetRivaSpeechRecognitionConfig(self, request, context):
        parameters = {"language_code": "en-US", "type": "online", "streaming": "true",
                      "offline": "true", "sample_rate": "24000",
                      "max_sessions": str(self.asr.engine.stepper.max_sessions)}
        return riva_asr_pb2.RivaSpeechRecognitionConfigResponse(model_config=[
            riva_asr_pb2.RivaSpeechRecognitionConfigResponse.Config(
                model_name=self.asr.model_name, parameters=parameters)])

    async def Recognize(self, request, context):
        try:
            fmt, offset = audio_format(request.config, request.audio)
        except InvalidInput as error:
            await abort(context, error)
        downmix = Downmix(fmt)
        ours = asr_pb2.RecognizeRequest(config=our_config(fmt, downmix.encoding),
                                        audio=downmix.push(request.audio[offset:]))
        response = await self.asr.Recognize(ours, context)
        language = request.config.language_code
        result = riva_asr_pb2.SpeechRecognitionResult(
            alternatives=[alternative(list(response.words),
                                      request.config.enable_word_time_offsets, language)],
            audio_processed=response.audio_seconds)
        out = riva_asr_pb2.RecognizeResponse(results=[result])
        if request.HasField("id"):
            out.id.CopyFrom(request.id)
        return out

    async def StreamingRecognize(self, request_iterator, context):
        utterances: list[Utterances] = []
        requests = self._our_requests(request_iterator, utterances)
        async for response in self.asr.StreamingRecognize(requests, context):
            if results := utterances[0].event(response):
                yield riva_asr_pb2.StreamingRecognizeResponse(results=results)
        if utterances and (results := utterances[0].end()):
            yield riva_asr_pb2.StreamingRecognizeResponse(results=results)

    async def _our_requests(self, requests: AsyncIterator, utterances: list[Utterances]
                            ) -> AsyncIterator[asr_pb2.StreamingRecognizeRequest]:
        """Riva's stream as ours: the config once the first audio has shown whether it is a
        WAV file, then the audio (mixed to mono). Raises InvalidInput on bad input; the ASR
        service turns it into INVALID_ARGUMENT."""
        first = await anext(requests, None)
        if first is None or first.WhichOneof("streaming_request") != "streaming_config":
            raise InvalidInput("the first request of a stream must carry the "
                               "streaming_config, before any audio_content")
        streaming = first.streaming_config
        config = streaming.config
        utterances.append(Utterances(streaming.interim_results,
                                     config.enable_word_time_offsets, config.language_code))
        head = b""
        async for request in requests:  # until the format is known
            head += _audio(request)
            if not looks_like_wav(head) or parse_wav_header(head) is not None:
                break
        fmt, offset = audio_format(config, head)
        downmix = Downmix(fmt)
        yield asr_pb2.StreamingRecognizeRequest(config=our_config(fmt, downmix.encoding))

        def audio(data: bytes) -> asr_pb2.StreamingRecognizeRequest:
            utterances[0].received_seconds += len(data) / fmt.frame_bytes / fmt.sample_rate
            return asr_pb2.StreamingRecognizeRequest(audio=downmix.push(data))

        if head[offset:]:
            yield audio(head[offset:])
        async for request in requests:
            yield audio(_audio(request))


def _audio(request: riva_asr_pb2.StreamingRecognizeRequest) -> bytes:
    if request.WhichOneof("streaming_request") != "audio_content":
        raise InvalidInput("a stream takes one streaming_config, in its first request; "
                           "every later request carries audio_content")
    return request.audio_content
