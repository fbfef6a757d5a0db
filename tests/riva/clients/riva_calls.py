"""Runs calls of the real ``nvidia-riva-client`` library against a server, in the client's own
venv (tests/riva/client_venv.py): a JSON list of calls on stdin, a JSON list of results on
stdout, each result the responses as dicts (``MessageToDict``) or the call's gRPC error.

    echo '[{"call": "tts_config"}]' | VENV/bin/python riva_calls.py --server 127.0.0.1:50051

The calls use the library as Riva's own scripts do (scripts/asr/transcribe_file.py,
transcribe_file_offline.py, scripts/tts/talk.py): files through ``AudioChunkFileIterator``
with ``add_audio_file_specs_to_config``, whole files to ``offline_recognize``.
"""

import argparse
import base64
import json
import sys

import grpc
import riva.client
from google.protobuf.json_format import MessageToDict
from riva.client.proto import riva_asr_pb2, riva_tts_pb2


def as_dict(message):
    return MessageToDict(message, preserving_proto_field_name=True)


def recognition_config(call):
    config = riva.client.RecognitionConfig(
        language_code=call.get("language_code", "en-US"), max_alternatives=1,
        enable_word_time_offsets=call.get("word_times", True),
        model=call.get("model", ""))
    if "encoding" in call:
        config.encoding = call["encoding"]
    if "sample_rate" in call:
        config.sample_rate_hertz = call["sample_rate"]
    return config


def streaming(asr, call):
    config = recognition_config(call)
    streaming_config = riva.client.StreamingRecognitionConfig(
        config=config, interim_results=call.get("interim", False))
    if "raw" in call:  # raw PCM bytes, as LiveKit's plugin streams them
        data = base64.b64decode(call["raw"])
        step = call.get("chunk_bytes", 3200)
        chunks = [data[i:i + step] for i in range(0, len(data), step)]
    else:  # a file, header included, as transcribe_file.py streams it
        riva.client.add_audio_file_specs_to_config(streaming_config, call["wav"])
        if call.get("unset_format"):  # as Pipecat's segmented STT: encoding and rate 0
            config.sample_rate_hertz = 0
            streaming_config.config.sample_rate_hertz = 0
        chunks = riva.client.AudioChunkFileIterator(call["wav"], call.get("chunk_frames", 1600))
    return [as_dict(r) for r in asr.streaming_response_generator(chunks, streaming_config)]


def offline(asr, call):
    config = recognition_config(call)
    if "raw" in call:
        data = base64.b64decode(call["raw"])
    else:
        riva.client.add_audio_file_specs_to_config(config, call["wav"])
        with open(call["wav"], "rb") as f:
            data = f.read()
    return [as_dict(asr.offline_recognize(data, config))]


def synthesis_args(call):
    args = {"voice_name": call.get("voice"), "language_code": call.get("language_code", "en-US"),
            "sample_rate_hz": call.get("sample_rate", 22050),
            "enable_word_time_offsets": call.get("word_times")}
    if "encoding" in call:
        args["encoding"] = call["encoding"]
    if "custom_configuration" in call:
        args["custom_configuration"] = call["custom_configuration"]
    return args


def synthesize(tts, call):
    return [as_dict(tts.synthesize(call["text"], **synthesis_args(call)))]


def synthesize_online(tts, call):
    return [as_dict(r) for r in tts.synthesize_online(call["text"], **synthesis_args(call))]


def asr_config(asr, call):
    request = riva_asr_pb2.RivaSpeechRecognitionConfigRequest(model_name=call.get("model", ""))
    return [as_dict(asr.stub.GetRivaSpeechRecognitionConfig(
        request, metadata=asr.auth.get_auth_metadata()))]


def tts_config(tts, call):
    # As Pipecat's NVIDIA TTS does at start-up, and talk.py --list-voices.
    response = tts.stub.GetRivaSynthesisConfig(riva_tts_pb2.RivaSynthesisConfigRequest(),
                                               metadata=tts.auth.get_auth_metadata())
    voices = []
    for config in response.model_config:
        name = config.parameters["voice_name"]
        language = config.parameters["language_code"]
        subvoices = [v.split(":")[0] for v in config.parameters["subvoices"].split(",")]
        voices += [{"voice": f"{name}.{sub}", "language_code": language} for sub in subvoices]
    return [as_dict(response), {"voices": voices}]


ASR_CALLS = {"streaming": streaming, "offline": offline, "asr_config": asr_config}
TTS_CALLS = {"synthesize": synthesize, "synthesize_online": synthesize_online,
             "tts_config": tts_config}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--token")
    args = parser.parse_args()
    metadata = [["authorization", f"Bearer {args.token}"]] if args.token else None
    auth = riva.client.Auth(uri=args.server, metadata_args=metadata)
    asr, tts = riva.client.ASRService(auth), riva.client.SpeechSynthesisService(auth)
    results = []
    for call in json.load(sys.stdin):
        kind = call["call"]
        try:
            if kind in ASR_CALLS:
                results.append({"responses": ASR_CALLS[kind](asr, call)})
            else:
                results.append({"responses": TTS_CALLS[kind](tts, call)})
        except grpc.RpcError as error:
            results.append({"error": error.code().name, "details": error.details()})
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
