"""Full-duplex dialogue with Moshi: the Mimi codec and the Moshi LM composed into one stream."""
