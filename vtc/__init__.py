"""vtc: visual token compression for video LLMs, from one feature cache under one token accounting."""

__version__ = "0.1.0"
