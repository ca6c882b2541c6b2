"""The one error type users see: a single line naming the thing that is wrong."""


class OnnxcompError(Exception):
    """Bad input or an unmet requirement. The CLI prints `error: <message>` and exits 2."""
