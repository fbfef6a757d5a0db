"""NVIDIA Riva's speech API (``nvidia.riva.asr.RivaSpeechRecognition``,
``nvidia.riva.tts.RivaSpeechSynthesis``) as thin adapters over our ASR and TTS services, so
Riva clients (nvidia-riva-client, Pipecat's and LiveKit's NVIDIA plugins) talk to the same
engines on the same port."""
