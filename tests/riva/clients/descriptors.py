"""Prints the nvidia-riva-client's own descriptors of Riva's ASR / TTS protos as JSON
{file stem: base64 of its serialized FileDescriptorProto}, run in the client's venv."""

import base64
import json
import sys

from riva.client.proto import riva_asr_pb2, riva_audio_pb2, riva_common_pb2, riva_tts_pb2

modules = {"riva_audio": riva_audio_pb2, "riva_common": riva_common_pb2,
           "riva_asr": riva_asr_pb2, "riva_tts": riva_tts_pb2}
json.dump({name: base64.b64encode(m.DESCRIPTOR.serialized_pb).decode()
           for name, m in modules.items()}, sys.stdout)
