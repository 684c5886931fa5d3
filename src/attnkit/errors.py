"""User-facing errors: the CLI prints these as one line (``attnkit: error: ...``) and exits with code 2."""


class AttnkitError(Exception):
    """A problem the user can fix (bad input, missing file, wrong model type). Never a bug."""


class InputError(AttnkitError, ValueError):
    """Bad user input: malformed text, TSV rows, arguments."""


class CheckpointError(AttnkitError):
    """A run directory or checkpoint that is missing, corrupt, mismatched or of another model family."""
