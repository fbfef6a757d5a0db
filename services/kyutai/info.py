"""``GET /api/voices`` and ``GET /api/info``: what the server can do, as JSON, for the web page
and for clients that pick a voice (our additions beside Kyutai's endpoints).

    /api/voices  {"voices": [names...], "default": name or null}   (as ListVoices)
    /api/info    {"services": ["asr", "tts", "chat"], "max_sessions": N,
                  "models": {"asr": ..., "tts": ..., "chat": ...}, "pause_heads": bool}
"""

from __future__ import annotations

from aiohttp import web

from services.asr.service import ASRService
from services.dialogue.service import DialogueService
from services.kyutai.messages import session_slots
from services.tts.conditioning import list_voices
from services.tts.service import TTSService


class Info:
    def __init__(self, asr: ASRService | None, tts: TTSService | None,
                 dialogue: DialogueService | None):
        self.asr, self.tts, self.dialogue = asr, tts, dialogue

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/voices", self.voices)
        app.router.add_get("/api/info", self.info)

    async def voices(self, request: web.Request) -> web.Response:
        tts = self.tts
        names = list_voices(tts.voices_dir) if tts is not None and tts.voices_dir else []
        # The server's default voice is the first of its folder (services.wiring).
        return web.json_response({"voices": names, "default": names[0] if names else None})

    async def info(self, request: web.Request) -> web.Response:
        models, engines = {}, []
        if self.asr is not None:
            models["asr"] = self.asr.model_name
            engines.append(self.asr.engine)
        if self.tts is not None:
            models["tts"] = self.tts.model_name
            engines.append(self.tts.engine)
        if self.dialogue is not None:
            models["chat"] = self.dialogue.lm.info().model
            engine = getattr(self.dialogue.lm, "engine", None)
            if engine is not None:
                engines.append(engine)
        # One engine per loaded model: its slots are shared by every service on it.
        max_sessions = max((session_slots(e) for e in engines), default=0)
        return web.json_response({
            "services": list(models), "max_sessions": max_sessions, "models": models,
            "pause_heads": self.asr is not None and self.asr.pause_heads > 0})
