"""Writing real media files with PyAV: H.264/MPEG-4 video with AAC/MP3/PCM audio, and WAV.

Legend: T frames, H/W pixels, C audio channels, N audio samples.
"""

from __future__ import annotations

import itertools
import wave
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

AUDIO_FRAME = 1024  # samples per audio frame handed to the encoder
LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1"}


def write_av(
    path: str | Path,
    video_THWC: np.ndarray | Iterable[np.ndarray] | None,
    *,
    fps: float = 25.0,
    audio_CN: np.ndarray | None = None,
    sample_rate: int = 44100,
    video_codec: str = "libx264",
    audio_codec: str = "aac",
    keyframe_every: float = 2.0,
    rotation: int = 0,
    frame_times: np.ndarray | None = None,
    preset: str = "ultrafast",
) -> Path:
    """Encode uint8 RGB frames and float audio in [-1, 1] into one container (format by suffix).

    `keyframe_every` sets a fixed keyframe interval in seconds; `frame_times` (seconds, one per
    frame) writes a variable-frame-rate stream; `rotation` sets the display-matrix rotation;
    `preset` is x264's: "ultrafast" is quick to write but far cheaper to decode than web video
    (no CABAC, B-frames or deblocking), "veryfast" has all three. The video may be an iterable
    of (H, W, 3) frames instead of one array: each is encoded as it comes, so a long video is
    never whole in memory (`prepare`); every frame must have the first one's size.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames, size = _frames_and_size(path, video_THWC)
    with av.open(str(path), "w") as container:
        vstream = astream = None
        if frames is not None:
            # a variable frame rate is written as millisecond timestamps
            rate = 1000.0 if frame_times is not None else fps
            vstream = _video_stream(container, size, rate, video_codec, keyframe_every, preset)
            if rotation:
                vstream.set_display_rotation(rotation)
        if audio_CN is not None:
            astream = container.add_stream(audio_codec, rate=sample_rate)
            astream.layout = LAYOUTS[audio_CN.shape[0]]
        if vstream is not None:
            for index, rgb in enumerate(frames):
                if rgb.shape[:2] != size:
                    raise ValueError(
                        f"{path}: frame {index} is {rgb.shape[1]}x{rgb.shape[0]}, "
                        f"the first {size[1]}x{size[0]}"
                    )
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                if frame_times is not None:
                    frame.pts = round(frame_times[index] * 1000)
                container.mux(vstream.encode(frame))
            container.mux(vstream.encode(None))
        if astream is not None:
            _encode_audio(container, astream, audio_CN, sample_rate)
    return path


def _frames_and_size(
    path: Path, video: np.ndarray | Iterable[np.ndarray] | None
) -> tuple[Iterable[np.ndarray] | None, tuple[int, int]]:
    """The frames to encode and their (height, width): an array's own, or an iterable's first
    frame's (put back in front)."""
    if video is None:
        return None, (0, 0)
    if isinstance(video, np.ndarray):
        return video, tuple(video.shape[1:3])
    frames = iter(video)
    first = next(frames, None)
    if first is None:
        raise ValueError(f"{path}: no video frames to write")
    return itertools.chain([first], frames), tuple(first.shape[:2])


def _video_stream(container, size, fps, codec, keyframe_every, preset):
    stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
    stream.height, stream.width = size
    stream.pix_fmt = "yuv420p"
    gop = max(1, round(keyframe_every * fps))
    stream.gop_size = gop
    if codec == "libx264":
        stream.options = {
            "preset": preset,
            "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0",
        }
    else:
        stream.options = {"g": str(gop)}
        stream.bit_rate = 1_500_000
    return stream


def _encode_audio(container, stream, audio_CN: np.ndarray, sample_rate: int) -> None:
    samples = np.clip(audio_CN, -1.0, 1.0).astype(np.float32)
    pts = 0
    for start in range(0, samples.shape[1], AUDIO_FRAME):
        chunk = np.ascontiguousarray(samples[:, start : start + AUDIO_FRAME])
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=LAYOUTS[samples.shape[0]])
        frame.sample_rate, frame.pts = sample_rate, pts
        pts += chunk.shape[1]
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def write_wav(path: str | Path, audio_CN: np.ndarray, sample_rate: int) -> Path:
    """16-bit PCM WAV from float audio in [-1, 1]."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = (np.clip(audio_CN, -1.0, 1.0) * 32767).astype("<i2").T
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(audio_CN.shape[0])
        handle.setsampwidth(2)
        handle.setframerate(sample_rate)
        handle.writeframes(pcm.tobytes())
    return path
