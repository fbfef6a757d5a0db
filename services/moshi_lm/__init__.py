"""The Moshi LM family (Moshi 7B, Kyutai STT, the TTS backbone): config, model, loading,
batched streaming generation and the text tokenizer."""
