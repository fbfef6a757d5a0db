"""Frame geometry shared by every service.

Mimi turns 24 kHz mono audio into 12.5 Hz frames; everything downstream (LM steps, ASR words,
TTS audio) lives on that 80 ms grid.
"""

SAMPLE_RATE = 24_000
FRAME_RATE = 12.5
FRAME_SIZE = 1920  # samples per frame, 80 ms
FRAME_MS = 80

# Token ids with a meaning in every model of the family (docs/architecture.md#tokens).
ZERO_TOKEN = -1  # embeds to an exact zero vector: "no input"
UNGENERATED_TOKEN = -2  # placeholder in a generation cache: "to be sampled"
TEXT_EPAD = 0  # end of padding: a word starts at the next step
TEXT_PAD = 3

# Serving timings: read by the gRPC server and by ``serve``'s flags (a torch-free module, so
# ``--help`` stays fast).
DEFAULT_CONFIG_TIMEOUT = 10.0  # seconds a stream may take to send its first message
DEFAULT_DRAIN_DELAY = 1.0  # seconds of NOT_SERVING before the listener closes on shutdown
