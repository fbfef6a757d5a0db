"""The ``moshi-services`` console command."""
