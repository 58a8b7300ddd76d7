"""User-facing errors.

Every problem caused by user input (a bad file, a wrong option, an unusable data set) is raised
as :class:`LakdError` with a one-line message that names the file or field and the problem.
The CLI prints the message and exits non-zero without a traceback (unless ``--debug``).

Library code names settings by their config field, never by a command-line flag: the same
functions run from Python, from the CLI and from YAML configs. A field is written in backquotes
(``f"{out}: already exists (use `overwrite` to replace it)"``; :data:`QUOTED_FIELD`), or as a
leading ``name:`` prefix when the problem is that field's value (``"batch_size: must be positive,
got 0"``; :data:`LEADING_FIELD`). The CLI shows both forms as the flags of the command that ran
(``--overwrite``, ``--batch-size: ...``; its table is ``lakd.cli.FIELD_FLAGS``) and leaves a field
the command has no flag for as written. Advice about another command names it in words.
"""

from __future__ import annotations

import re

QUOTED_FIELD = re.compile(r"`([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*)`")  # `overwrite`, `source_options.download`
LEADING_FIELD = re.compile(r"^([a-z_][a-z0-9_]*): ")  # "batch_size: must be positive, got 0"


class LakdError(Exception):
    """A problem with user input, reported as one line; ``str(err)`` is the whole message."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
