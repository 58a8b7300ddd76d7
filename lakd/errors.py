"""User-facing errors.

Every problem caused by user input (a bad file, a wrong option, an unusable data set) is raised
as :class:`LakdError` with a one-line message that names the file or field and the problem.
The CLI prints the message and exits non-zero without a traceback (unless ``--debug``).
"""

from __future__ import annotations


class LakdError(Exception):
    """A problem with user input, reported as one line; ``str(err)`` is the whole message."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
