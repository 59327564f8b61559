"""The one error type that user input can raise.

The CLI turns a ``ConfigError`` into the line ``error: <field>: <reason>`` and exit code 2, so
every validation in the library raises this, naming the field the user can fix.
"""


class ConfigError(ValueError):
    """Bad user input: ``field`` names what to fix, ``reason`` says why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class SchedulerError(RuntimeError):
    """A scheduler produced a batch that breaks the model (a bug in the policy)."""


class ConfigWarning(UserWarning):
    """Input that runs but may mislead: ``field`` names it, ``reason`` says how.

    The CLI prints it as one line ``warning: <field>: <reason>``; a notebook sees it through
    the ``warnings`` module (``warnings.simplefilter("error", ConfigWarning)`` makes it fatal).
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
