"""Streaming speech recognition: words, timestamps and voice activity from the text stream."""
