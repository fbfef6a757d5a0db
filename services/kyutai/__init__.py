"""Kyutai's websocket protocols on the HTTP port (moshi-server's wire format, MIT /
Apache-2.0): ``/api/asr-streaming``, ``/api/tts_streaming``, ``/api/chat``, with
``/api/voices`` and ``/api/info`` beside them. Thin adapters over the same services and
engines as the gRPC port."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.core.grpc_server import GrpcService
    from services.http.server import HttpRoutes


def kyutai_routes(services: Sequence[GrpcService]) -> list[HttpRoutes]:
    """The endpoints of whichever of ASR, TTS and dialogue ``services`` holds."""
    from services.asr.service import ASRService
    from services.dialogue.service import DialogueService
    from services.kyutai.asr import AsrStreaming
    from services.kyutai.chat import Chat
    from services.kyutai.info import Info
    from services.kyutai.tts import TtsStreaming
    from services.tts.service import TTSService

    def first(kind: type):
        return next((s for s in services if isinstance(s, kind)), None)

    asr, tts, dialogue = first(ASRService), first(TTSService), first(DialogueService)
    routes: list[HttpRoutes] = [Info(asr, tts, dialogue)]
    routes += [AsrStreaming(asr)] if asr is not None else []
    routes += [TtsStreaming(tts)] if tts is not None else []
    routes += [Chat(dialogue)] if dialogue is not None else []
    return routes
