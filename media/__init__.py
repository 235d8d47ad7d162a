"""ffmpeg through pipes: probe, decode, encode. Argument lists only, never a shell."""

from media.errors import MediaError
from media.probe import MediaInfo, MediaLimits, probe
from media.reader import FrameRange, FrameReader
from media.segments import concat, segment_writer, split
from media.tools import Tools
from media.writer import Encoder, FrameWriter, Output, choose_encoder

__all__ = [
    "Encoder",
    "FrameRange",
    "FrameReader",
    "FrameWriter",
    "MediaError",
    "MediaInfo",
    "MediaLimits",
    "Output",
    "Tools",
    "choose_encoder",
    "concat",
    "probe",
    "segment_writer",
    "split",
]
