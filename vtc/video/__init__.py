"""Video decoding (decord or PyAV), frame sampling, and a decode worker with a per-video timeout.

Cheap to import: numpy only; decord, PyAV and PIL are imported where they are used.
"""

from vtc.video.decode import DecodedVideo, VideoError, decode_video, fingerprint, list_backends
from vtc.video.sampling import SamplingPolicy
from vtc.video.worker import DecodePool, DecodeWorker

__all__ = [
    "DecodePool",
    "DecodeWorker",
    "DecodedVideo",
    "SamplingPolicy",
    "VideoError",
    "decode_video",
    "fingerprint",
    "list_backends",
]
