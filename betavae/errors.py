"""The mistakes a user can cause, each reported as one sentence saying what to do, exit code 2, no traceback."""


class UserError(Exception):
    """A mistake the user can fix (a param, a path, a checkpoint); the message is one sentence saying how."""


class DataError(Exception):
    """A user-fixable data problem (missing or corrupt files); the message is one sentence saying what to do."""


class CheckpointWriteError(OSError):
    """The checkpoint could not be written (full disk, read-only folder, I/O error); the message is one clause."""
