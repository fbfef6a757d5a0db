"""Building blocks shared by every service: frame geometry, the streaming-state contract,
causal convolutions, the transformer, sampling, checkpoint loading and audio I/O."""
