"""The one error type the CLI prints as a single line (traceback only with VTC_DEBUG=1)."""


class VtcError(Exception):
    """A user-facing failure: bad input, refused store, missing model. The message is one line."""
