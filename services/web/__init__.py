"""The web page of ``serve --http-port``: Talk, Transcribe and Speak in the browser."""
