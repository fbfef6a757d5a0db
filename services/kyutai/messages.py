"""What Kyutai's websocket protocols put on the wire, and what every endpoint here shares:
auth, query parameters, the error form, close codes.

The message shapes are those of Kyutai's moshi-server (github.com/kyutai-labs/moshi,
``rust/moshi-server``, MIT / Apache-2.0), reproduced as facts so that its clients talk to us
unchanged:

- ASR and TTS: msgpack maps with a ``"type"`` key (``{"type": "Word", "text": ..., ...}``),
  one per binary websocket message; floats as float32, as the Rust server packs them.
- chat: binary messages whose first byte is the kind (``KIND_*``) and the rest its payload.

Errors after the upgrade: the protocol's own error message, then the socket is closed with
``CLOSE_POLICY`` (bad input) or ``CLOSE_TRY_AGAIN`` (every slot busy).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import grpc
import msgpack
from aiohttp import web

from services.core.engine import (
    CapacityError,
    EngineError,
    EngineFailure,
    EngineStopped,
    InvalidInput,
)
from services.core.grpc_stream import RETRY_DELAY_SECONDS, STATUS_OF_ERROR
from services.core.pcm import PcmError
from services.core.validation import MAX_SEED
from services.http.server import token_matches

# Chat message kinds (moshi-server's protocol.rs MsgType), the first byte of each message.
KIND_HANDSHAKE = 0
KIND_AUDIO = 1
KIND_TEXT = 2
KIND_ERROR = 5

# Websocket close codes (RFC 6455 §7.4.1).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001  # the server is shutting down
CLOSE_POLICY = 1008  # bad input, bad query parameters
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN = 1013  # every slot is busy

API_KEY_HEADER = "kyutai-api-key"
API_KEY_QUERY = "auth_id"  # browsers cannot set headers on a websocket

def pack(kind: str, **fields: Any) -> bytes:
    """One ASR / TTS message: ``{"type": kind, **fields}`` in msgpack."""
    return msgpack.packb({"type": kind, **fields}, use_single_float=True)


def unpack(data: bytes, expected: str) -> dict[str, Any]:
    """A client's msgpack message as a map with a string ``"type"``; InvalidInput naming
    ``expected`` (the types the endpoint takes) otherwise."""
    try:
        message = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException) as error:
        raise InvalidInput(f"not a msgpack message ({error}); expected a map with a "
                           f"\"type\" of {expected}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise InvalidInput(f"expected a msgpack map with a \"type\" of {expected}, got "
                           f"{type(message).__name__}")
    return message


def field(message: dict[str, Any], name: str, *kinds: type) -> Any:
    """``message[name]`` if it is one of ``kinds`` (a bool is no int here); InvalidInput
    saying what is wrong."""
    value = message.get(name)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        got = "nothing" if value is None else type(value).__name__
        wanted = " or ".join(k.__name__ for k in kinds)
        raise InvalidInput(f"{message['type']} needs a {name!r} field of type {wanted}, "
                           f"got {got}")
    return value


def check_auth(request: web.Request) -> None:
    """Refuses the handshake (HTTP 401, before the upgrade: no slot is taken) unless the
    ``kyutai-api-key`` header or the ``auth_id`` query parameter is the server's token."""
    given = request.headers.get(API_KEY_HEADER) or request.query.get(API_KEY_QUERY)
    if not token_matches(request.app, given):
        raise web.HTTPUnauthorized(
            text=("missing API key: send the kyutai-api-key header or the auth_id query "
                  "parameter" if not given else "wrong API key"))


# ---- query parameters ----------------------------------------------------------------------

def query_number(request: web.Request, name: str, convert: Callable[[str], Any]) -> Any:
    """The query parameter ``name`` as ``convert`` reads it (int, float), None when absent;
    InvalidInput when it is not a number."""
    text = request.query.get(name)
    if text is None or text == "":
        return None
    try:
        value = convert(text)
    except ValueError:
        kind = "an integer" if convert is int else "a number"
        raise InvalidInput(f"query parameter {name} must be {kind}, got {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput(f"query parameter {name} must be finite, got {text!r}")
    return value


def query_seed(request: web.Request) -> int | None:
    seed = query_number(request, "seed", int)
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise InvalidInput(f"query parameter seed must be in 0..2**63-1, got {seed}")
    return seed


# ---- errors --------------------------------------------------------------------------------

def status_of(error: BaseException | None) -> str:
    """The outcome of a call as /metrics counts it: "ok", or the gRPC status its error maps
    to in snake case ("invalid_argument", "resource_exhausted"), so that websocket and gRPC
    calls count alike."""
    if error is None:
        return "ok"
    code = next((c for t, c in STATUS_OF_ERROR.items() if isinstance(error, t)),
                grpc.StatusCode.INTERNAL)
    return code.name.lower()


def close_code(error: Exception) -> int:
    if isinstance(error, CapacityError):
        return CLOSE_TRY_AGAIN
    if isinstance(error, EngineStopped):
        return CLOSE_GOING_AWAY
    if isinstance(error, EngineFailure) or not isinstance(error, EngineError | PcmError):
        return CLOSE_INTERNAL
    return CLOSE_POLICY


def session_slots(engine: Any) -> int:
    """The sessions an engine takes (its stepper's count: a shared engine holds codec rows
    besides, as the services' GetInfo says)."""
    return getattr(engine.stepper, "max_sessions", engine.max_sessions)


def error_text(error: Exception, max_sessions: int | None) -> str:
    """What the client is told: a full server says how long to wait."""
    if isinstance(error, CapacityError) and max_sessions is not None:
        return f"all {max_sessions} slots are busy, retry in {RETRY_DELAY_SECONDS} s"
    if isinstance(error, EngineError | PcmError):
        return str(error)
    return f"internal error: {error}"
