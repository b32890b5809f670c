"""The one exception type of cola_fast.data."""


class DataError(ValueError):
    """A dataset file or an argument is missing or malformed. The message names the
    file or the video concerned."""
