"""Compile a recorded session's tracks into one MP4 (SPEC §8).

`probe` reads what the tracks contain (PyAV, no ffprobe needed), `plan` turns that into
FFmpeg arguments without touching anything (so every decision is unit-testable), and `run`
executes FFmpeg with progress, a bounded error tail and cancellation.
"""
