"""moshi-services: Kyutai's Moshi model family as streaming gRPC services."""
