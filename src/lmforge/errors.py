"""The one error type users see.

Every failure a user can fix (a bad config, a missing or malformed file, an artifact folder that
is not what a stage expects, a diverged run) raises a subclass of `LmforgeError` whose message is
one line naming the file, line or key and what was expected. The command line prints that line
and exits with status 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import zlib
from pathlib import Path

READ_ERRORS = (OSError, UnicodeDecodeError, EOFError, zlib.error)
"""What reading a user's file can raise: missing, a folder, no permission, not UTF-8, a truncated
or corrupt gzip stream (EOFError, zlib.error). Boundaries that read files catch these and raise
their own `LmforgeError` with `unreadable`'s message."""


class LmforgeError(Exception):
    """A failure the user can fix; `str(err)` is the one line the command line prints."""


def unreadable(path: str | Path, err: BaseException, expected: str) -> str:
    """The one-line message for a file that could not be read, e.g. 'x.tsv: no such file
    (expected a TSV file)'; the same wording at every boundary, whichever error type it raises."""
    if isinstance(err, FileNotFoundError):
        problem = "no such file"
    elif isinstance(err, IsADirectoryError):
        problem = "is a folder"
    elif isinstance(err, NotADirectoryError):
        problem = "a parent of it is not a folder"
    elif isinstance(err, PermissionError):
        problem = "permission denied"
    elif isinstance(err, UnicodeDecodeError):
        problem = f"not UTF-8 text (byte {err.start})"
    elif isinstance(err, EOFError):
        problem = "ends too early (truncated?)"
    else:
        problem = f"cannot be read ({getattr(err, 'strerror', None) or err})"
    return f"{path}: {problem} (expected {expected})"
