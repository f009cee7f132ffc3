"""The one error type the CLI prints as a single line (traceback only with VTC_DEBUG=1)."""


class VtcError(Exception):
    """A user-facing failure: bad input, refused store, missing model. The message is one line."""


def warn(message: str) -> None:
    """One line on stderr for something skipped or ignored that the user should know about."""
    import sys

    print(f"warning: {message}", file=sys.stderr, flush=True)
