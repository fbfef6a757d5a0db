"""Streaming text-to-speech: script preparation, the word state machine, conditioning."""
