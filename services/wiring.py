"""Building the services from options: the one place that decides which models load and which
service runs on which engine. ``moshi-services serve``, the in-process paths of the other
commands and the tests all call it, so a command run in process and the same command run
against ``serve`` use the same models and give the same output.

    options = ModelOptions(hf_repo="kyutai/moshiko-pytorch-bf16", dtype="bfloat16")
    services = build_services(None, options)          # every service the LM supports
    asr = service_named(services, "asr")

The "riva" entry serves NVIDIA Riva's speech API (``services.riva``) over the ASR and TTS
services of the same list: adapters on the same engines, not models of their own.

A Moshi-architecture LM (the built-in one too) serves dialogue, ASR and TTS sessions on one
engine: ASR delays the LM's text behind the audio forced onto Moshi's streams, TTS delays its
audio behind the forced text. A Kyutai STT or TTS checkpoint serves its own mode only, with
the codec its config names. Without a checkpoint the built-in tiny random models stand in
(``services.builtin``).

Torch and the models are imported inside the functions: the CLI imports this module at
start-up, and ``--help`` must not pay for torch.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from services import builtin
from services.core.limits import RequestLimits

if TYPE_CHECKING:
    import torch

    from services.asr.service import ASRService
    from services.core.grpc_server import GrpcService
    from services.http.server import HttpRoutes
    from services.mimi.model import MimiModel
    from services.mimi.service import MimiService
    from services.moshi_lm.config import LMConfig
    from services.moshi_lm.model import LMModel
    from services.tts.service import TTSService

log = logging.getLogger("moshi-services.wiring")

ALL_SERVICES = ("mimi", "lm", "dialogue", "asr", "tts", "riva")
# What each kind of LM checkpoint serves (see checkpoint_kind); the default service list.
SUPPORTED = {"moshi": ALL_SERVICES, "stt": ("mimi", "asr", "riva"),
             "tts": ("mimi", "tts", "riva")}
SERVICE_NAMES = {"mimi": "services.mimi.Mimi", "lm": "services.moshi_lm.MoshiLM",
                 "dialogue": "services.dialogue.Dialogue",
                 "asr": "services.asr.SpeechRecognition", "tts": "services.tts.SpeechSynthesis"}
# "riva": Riva's service over each of ours that is served
RIVA_SERVICE_NAMES = {"asr": "nvidia.riva.asr.RivaSpeechRecognition",
                      "tts": "nvidia.riva.tts.RivaSpeechSynthesis"}
DTYPES = ("float32", "bfloat16")
# The Moshi paper's streaming ASR and TTS by delays: 2 s (25 frames) each way.
DEFAULT_TEXT_DELAY_FRAMES = 25
DEFAULT_AUDIO_DELAY_FRAMES = 25


class OptionsError(ValueError):
    """Options that do not fit the models they name (the CLI reports it as a usage error)."""


class Tokenizer(Protocol):
    """What the wiring needs of a text tokenizer (TextTokenizer, BuiltinTokenizer)."""

    @property
    def pieces(self) -> list[str]: ...

    def encode(self, text: str) -> list[int]: ...

    def display(self, ids: Sequence[int]) -> str: ...


@dataclasses.dataclass(frozen=True)
class ModelOptions:
    """Where the models come from (nothing given: the built-in tiny random models) and how
    they run."""

    hf_repo: str | None = None
    mimi_checkpoint: str | None = None
    lm_checkpoint: str | None = None
    device: str = "cpu"
    dtype: str = "float32"  # one of DTYPES
    max_sessions: int = 8
    idle_timeout: float = 30.0
    batch_window: float | None = 0.0  # seconds, None: automatic; see core.engine.Engine
    asr_text_delay: int = DEFAULT_TEXT_DELAY_FRAMES  # frames; ASR on a Moshi-architecture LM
    tts_audio_delay: int = DEFAULT_AUDIO_DELAY_FRAMES  # frames; TTS on a Moshi-architecture LM
    voices_dir: str | None = None  # voices of a Kyutai TTS checkpoint
    quantize: str | None = None  # int8 LM weights; see services.moshi_lm.quantize
    kv_dtype: str | None = None  # the LM's KV ring, one of DTYPES (None: the compute dtype)
    builtin_preset: str = "tiny"  # the built-in models without a checkpoint (BUILTIN_PRESETS)
    limits: RequestLimits = dataclasses.field(default_factory=RequestLimits)  # see core.limits

    @property
    def builtin(self) -> bool:
        return self.hf_repo is None and self.mimi_checkpoint is None \
            and self.lm_checkpoint is None

    @property
    def builtin_mimi(self) -> bool:
        return self.hf_repo is None and self.mimi_checkpoint is None

    @property
    def builtin_lm(self) -> bool:
        return self.hf_repo is None and self.lm_checkpoint is None

    @property
    def torch_dtype(self) -> torch.dtype:
        return _torch_dtype(self.dtype, "dtype")

    @property
    def torch_kv_dtype(self) -> torch.dtype | None:
        return None if self.kv_dtype is None else _torch_dtype(self.kv_dtype, "kv dtype")


def _torch_dtype(name: str, what: str) -> torch.dtype:
    import torch

    if name not in DTYPES:
        raise OptionsError(f"{what} {name!r}: choose from {', '.join(DTYPES)}")
    return getattr(torch, name)


def check_device(device: str) -> None:
    """OptionsError unless torch can run on ``device`` here (said before any model loads,
    not as an assertion deep inside torch)."""
    import torch

    try:
        kind = torch.device(device).type
    except RuntimeError as e:
        raise OptionsError(f"--device {device}: {e}") from None
    if kind == "cuda" and not torch.cuda.is_available():
        why = ("this torch is built without CUDA" if torch.version.cuda is None
               else "no CUDA GPU is visible")
        raise OptionsError(f"--device {device}: {why} (torch {torch.__version__}); use "
                           "--device cpu")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise OptionsError(f"--device {device}: MPS is not available here; use --device cpu")


def dtype_warning(device: str, dtype: str) -> str | None:
    """A one-line warning when ``dtype`` will run far below this machine's speed: bfloat16 on a
    CPU without bf16 arithmetic (measured on an AVX2-only CPU: an STT-1B step with a full KV
    ring took 630 ms in bf16 and 44 ms in float32 with int8 weights); None otherwise."""
    from services.core import kernels

    if dtype != "bfloat16" or not device.startswith("cpu") or kernels.has_native_bf16():
        return None
    return ("warning: --dtype bfloat16 on a CPU without bf16 arithmetic (no AVX-512 BF16 or "
            "AMX): torch emulates it, several times slower than --dtype float32 (add "
            "--quantize int8-weight for small weights)")


def checkpoint_kind(cfg: LMConfig) -> str:
    """"tts" (a Kyutai TTS checkpoint: tts_config), "stt" (a Kyutai STT checkpoint: text only
    out, dep_q = 0) or "moshi" (generates text and audio: dialogue, and ASR / TTS by delays)."""
    if cfg.tts_config:
        return "tts"
    return "moshi" if cfg.dep_q else "stt"


def lm_kind(options: ModelOptions) -> str:
    """The kind of the LM ``options`` name (only its config is read)."""
    from services.moshi_lm.loader import load_config

    if options.builtin_lm:
        return "moshi"
    return checkpoint_kind(load_config(options.lm_checkpoint, options.hf_repo))


def service_named(services: Sequence[GrpcService], kind: str) -> GrpcService:
    """The service of ``kind`` ("mimi", "lm", "dialogue", "asr", "tts") among ``services``."""
    for service in services:
        if service.name == SERVICE_NAMES[kind]:
            return service
    raise LookupError(f"no {kind} service among {[s.name for s in services]}")


# ---- models ------------------------------------------------------------------------------------

def load_mimi_model(options: ModelOptions, num_codebooks: int = 8) -> MimiModel:
    """Mimi from --mimi-checkpoint / --hf-repo, else the built-in tiny random one."""
    check_device(options.device)
    from services.mimi import load_mimi

    if options.builtin_mimi:
        builtin.announce("Mimi")
        return builtin.builtin_mimi(options.device, options.torch_dtype, num_codebooks,
                                    options.builtin_preset)
    return load_mimi(options.mimi_checkpoint, options.hf_repo, device=options.device,
                     dtype=options.torch_dtype, num_codebooks=num_codebooks)


def load_lm_model(options: ModelOptions) -> tuple[LMModel, str, Tokenizer | None]:
    """(LMModel, its name, its text tokenizer or None) from --lm-checkpoint / --hf-repo, else
    the built-in tiny random LM in the Moshi layout with the built-in tokenizer."""
    check_device(options.device)
    from services.moshi_lm.loader import load_lm

    if options.builtin_lm:
        builtin.announce("Moshi LM")
        model = builtin.builtin_lm(options.device, options.torch_dtype, options.quantize,
                                   options.builtin_preset)
        name = builtin.BUILTIN_LM_NAME.replace("tiny", options.builtin_preset)
        return model, name, builtin.BuiltinTokenizer(model.cfg.text_vocab)
    checkpoint, repo = options.lm_checkpoint, options.hf_repo
    model = load_lm(checkpoint, repo, dtype=options.torch_dtype, device=options.device,
                    quantize=options.quantize)
    return model, str(checkpoint or repo), text_tokenizer(model.cfg, checkpoint, repo)


def text_tokenizer(cfg: LMConfig, checkpoint: str | None, hf_repo: str | None
                   ) -> Tokenizer | None:
    """The checkpoint's text tokenizer; None without a usable one."""
    from services.core.checkpoint import CheckpointError
    from services.moshi_lm.tokenizer import TextTokenizer

    try:
        return TextTokenizer.for_checkpoint(cfg, checkpoint, hf_repo)
    except (OSError, CheckpointError) as e:  # OSError: file missing locally or on the hub
        log.warning("no usable text tokenizer (%s): text pieces will be empty", e)
        return None


def codec_of(cfg: LMConfig, options: ModelOptions, num_codebooks: int) -> MimiModel:
    """The codec a Kyutai STT / TTS checkpoint's config names (next to its weights or in its
    repository), or the built-in one."""
    from services.core.checkpoint import resolve_file
    from services.mimi import load_mimi

    if options.builtin_lm:
        builtin.announce("Mimi")
        return builtin.builtin_mimi(options.device, num_codebooks=num_codebooks)
    checkpoint = options.lm_checkpoint
    folder = Path(checkpoint).parent if checkpoint and Path(checkpoint).is_file() \
        else checkpoint
    return load_mimi(resolve_file(cfg.mimi_name, folder, options.hf_repo),
                     device=options.device, num_codebooks=num_codebooks)


# ---- services ----------------------------------------------------------------------------------

def lm_generator(model, options: ModelOptions):
    """The streaming step around a loaded LM, with the options' KV ring dtype."""
    from services.moshi_lm.generate import LMGenerator

    return LMGenerator(model, options.torch_kv_dtype)


def engine_for(options: ModelOptions, lm=None, codec=None, max_delay: int | None = None,
               **temporal_options):
    """The one engine of a loaded LM (an LMGenerator) and / or codec: every session of every
    service on them is stepped in its tick (``services.core.tick``)."""
    from services.core.tick import speech_engine

    return speech_engine(options.max_sessions, lm, codec, max_delay=max_delay,
                         idle_timeout=options.idle_timeout, batch_window=options.batch_window,
                         **temporal_options)


def build_stt_service(options: ModelOptions) -> tuple[ASRService, MimiService]:
    """(ASRService, the Mimi service of its codec), one engine, on a Kyutai STT checkpoint,
    else on the built-in tiny random STT-layout model."""
    from services.asr.service import ASRService
    from services.mimi.service import MimiService
    from services.moshi_lm.loader import load_config, load_lm
    from services.moshi_lm.tokenizer import TextTokenizer

    check_device(options.device)
    checkpoint, repo = options.lm_checkpoint, options.hf_repo
    if options.builtin_lm:
        builtin.announce("STT model")
        model = builtin.builtin_stt(options.device, options.torch_dtype, options.quantize)
        decode, name = builtin.BuiltinTokenizer(model.cfg.text_vocab).decode, \
            builtin.BUILTIN_STT_NAME
    else:
        config = load_config(checkpoint, repo)
        model = load_lm(checkpoint, repo, config=config, dtype=options.torch_dtype,
                        device=options.device, quantize=options.quantize)
        decode = TextTokenizer.for_checkpoint(config, checkpoint, repo).display
        name = str(checkpoint or repo)
    mimi = codec_of(model.cfg, options, model.cfg.num_input_codebooks)
    engine = engine_for(options, lm_generator(model, options), mimi)
    return (ASRService.on_stt(engine, model.cfg, decode, name),
            MimiService(mimi, engine, options.limits))


def build_tts_service(options: ModelOptions) -> tuple[TTSService, MimiService]:
    """(TTSService, the Mimi service of its codec), one engine, on a Kyutai TTS checkpoint
    (the first voice of ``voices_dir`` is the default), else on the built-in tiny random
    TTS-layout model."""
    from services.mimi.service import MimiService
    from services.tts.conditioning import list_voices, load_voice, resolve_voice
    from services.tts.loading import load_tts
    from services.tts.service import TTSService

    check_device(options.device)
    voices_dir = options.voices_dir
    if options.builtin_lm:
        builtin.announce("TTS model")
        bundle, voice = builtin.builtin_tts(options.device, options.torch_dtype)
    else:
        bundle = load_tts(options.lm_checkpoint, options.hf_repo, device=options.device,
                          dtype=options.torch_dtype)
        voices = list_voices(voices_dir) if voices_dir else []
        voice = load_voice(resolve_voice(voices_dir, voices[0])) if voices else None
    model = bundle.model
    mimi = codec_of(model.cfg, options, model.cfg.dep_q)
    length = None if voice is None else voice.shape[-1]
    engine = engine_for(options, lm_generator(model, options), mimi, voice_length=length)
    service = TTSService.on_tts(engine, model, bundle.tokenizer, bundle.name, length,
                                voices_dir, voice, options.limits)
    return service, MimiService(mimi, engine, options.limits)


def build_checkpoint_speech_service(kind: str, options: ModelOptions,
                                    riva: bool = True) -> list[GrpcService]:
    """A Kyutai STT / TTS checkpoint's own service and the codec its config names, served as
    the Mimi service, on one engine (``riva``: and Riva's service over it)."""
    if options.mimi_checkpoint is not None:
        raise OptionsError("--mimi-checkpoint: a Kyutai STT / TTS checkpoint runs with the "
                           "codec its config names")
    service, codec = (build_stt_service if kind == "stt" else build_tts_service)(options)
    return with_riva([codec, service]) if riva else [codec, service]


def with_riva(services: list[GrpcService]) -> list[GrpcService]:
    """``services`` and Riva's service over each ASR / TTS service among them."""
    from services.riva.asr import RivaASRService
    from services.riva.tts import RivaTTSService

    adapters = {SERVICE_NAMES["asr"]: RivaASRService, SERVICE_NAMES["tts"]: RivaTTSService}
    return services + [adapters[s.name](s) for s in services if s.name in adapters]


def build_services(names: Sequence[str] | None, options: ModelOptions,
                   mimi_address: str | None = None, lm_address: str | None = None,
                   token: str | None = None) -> list[GrpcService]:
    """The services ``names`` (None: every one the LM supports, see SUPPORTED) and the
    in-process ones they run on, every in-process model on one engine. The dialogue uses the
    in-process codec and LM unless given addresses (and then loads no model of its own); ASR
    and TTS always run on the in-process LM's engine."""
    from services.mimi.service import MimiService
    from services.moshi_lm.service import MoshiLMService

    check_device(options.device)
    kind = lm_kind(options)
    names = SUPPORTED[kind] if names is None else names
    if unsupported := [n for n in names if n not in SUPPORTED[kind]]:
        raise OptionsError(f"a Kyutai {kind.upper()} checkpoint serves "
                           f"{', '.join(SUPPORTED[kind])}, not {', '.join(unsupported)}")
    if kind != "moshi":
        return build_checkpoint_speech_service(kind, options, "riva" in names)
    speech = [n for n in ("asr", "tts") if n in names]
    if "riva" in names and not speech:
        raise OptionsError("riva serves Riva's API over the asr and tts services: add asr "
                           "and / or tts to --services")
    need_mimi = "mimi" in names or speech or ("dialogue" in names and mimi_address is None)
    need_lm = "lm" in names or speech or ("dialogue" in names and lm_address is None)
    mimi = load_mimi_model(options) if need_mimi else None
    lm = tokenizer = None
    services: dict[str, GrpcService] = {}
    if need_lm:
        model, name, tokenizer = load_lm_model(options)
        lm = lm_generator(model, options)
        if speech and tokenizer is None:
            raise OptionsError("ASR and TTS need the LM's text tokenizer (see the warning "
                               "above); serve without them: --services mimi,lm,dialogue")
    # Sessions bring their own delays: the ring must hold the ASR / TTS ones.
    shift = max(options.asr_text_delay if "asr" in names else 0,
                options.tts_audio_delay if "tts" in names else 0)
    engine = engine_for(options, lm, mimi,
                        None if lm is None else lm.cfg.max_delay + shift) if mimi or lm else None
    if mimi is not None:
        services["mimi"] = MimiService(mimi, engine, options.limits)
    if lm is not None:
        services["lm"] = MoshiLMService(lm, engine, name,
                                        tokenizer.pieces if tokenizer is not None else None)
    if "dialogue" in names:
        services["dialogue"] = _dialogue(services, mimi_address, lm_address, token)
    if "asr" in names:
        from services.asr.service import ASRService

        services["asr"] = ASRService.on_moshi(engine, lm.cfg, tokenizer.display, name,
                                              options.asr_text_delay)
    if "tts" in names:
        from services.tts.service import TTSService

        services["tts"] = TTSService.on_moshi(engine, lm.cfg, tokenizer, name,
                                              options.tts_audio_delay, options.limits)
    return with_riva(list(services.values())) if "riva" in names else list(services.values())


def _dialogue(services: dict[str, GrpcService], mimi_address: str | None,
              lm_address: str | None, token: str | None) -> GrpcService:
    from services.core.grpc_server import create_channel
    from services.dialogue.service import DialogueService

    codec, codec_where = services.get("mimi"), "in-process"
    lm, lm_where = services.get("lm"), "in-process"
    if mimi_address is not None:
        from services.mimi.client import RemoteMimi

        codec = RemoteMimi(create_channel(mimi_address, backend=True), token)
        codec_where = mimi_address
    if lm_address is not None:
        from services.moshi_lm.client import RemoteLM

        lm, lm_where = RemoteLM(create_channel(lm_address, backend=True), token), lm_address
    return DialogueService(codec, lm, codec_where, lm_where)


def set_threads(threads: int | None) -> None:
    """torch's intra-op threads (None: torch's choice)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def serving_threads(device: str) -> int | None:
    """torch's intra-op threads for a server when none are asked for: on CPU one fewer than
    torch's choice (at least 1), so the gRPC event loop keeps a core. With every core in the
    engine's parallel regions, the loop preempts one of their threads and each region waits
    for it: on 2 cores, 16 real-time dialogues of the tiny models fell behind with 2 threads
    and kept up with 1 (bench/bench_serving.py, 2026-12-03). None (torch's choice) elsewhere."""
    if not device.startswith("cpu"):
        return None
    import torch

    return max(1, torch.get_num_threads() - 1)


def http_routes(services: Sequence[GrpcService]) -> list[HttpRoutes]:
    """What the HTTP port serves over ``services`` (``serve --http-port``): adapters over the
    same services and engines as the gRPC port."""
    from services.kyutai import kyutai_routes
    from services.web.routes import WebPage

    return [*kyutai_routes(services), WebPage()]


def close_all(services: Sequence[GrpcService]) -> None:
    """Closes the services and stops the engines they run on (each once)."""
    for service in services:
        service.close()
    for engine in {id(e): e for s in services for e in s.engines()}.values():
        engine.stop()


__all__ = ["ALL_SERVICES", "DTYPES", "RIVA_SERVICE_NAMES", "SERVICE_NAMES", "SUPPORTED",
           "ModelOptions", "OptionsError", "build_checkpoint_speech_service", "build_services",
           "build_stt_service", "build_tts_service", "check_device", "checkpoint_kind",
           "close_all", "codec_of", "dtype_warning", "engine_for", "http_routes", "lm_kind",
           "load_lm_model", "load_mimi_model", "service_named", "serving_threads", "set_threads",
           "text_tokenizer", "with_riva"]
