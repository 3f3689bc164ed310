"""The output leak filter: refuses job outputs that hold a verbatim copy of an input beyond a window.

Pure Python and the standard library, so the filter pod imports it cheaply. `LeakDetector` fingerprints
the inputs and scans each output, raw and through gzip, bzip2, xz, zlib, zip, tar, base64, hex and JSON
strings; `build_report` turns the results into the stage's verdict. See docs/leak-filter.md for what it
catches and what it cannot.
"""

from c2d_core.leak_filter.decoders import DecodeLimit
from c2d_core.leak_filter.detector import (
    Finding,
    InputStats,
    LeakDetector,
    LeakFilterConfig,
    LeakFilterConfigError,
    OutputReport,
    build_report,
    map_file,
)

__all__ = [
    "DecodeLimit",
    "Finding",
    "InputStats",
    "LeakDetector",
    "LeakFilterConfig",
    "LeakFilterConfigError",
    "OutputReport",
    "build_report",
    "map_file",
]
