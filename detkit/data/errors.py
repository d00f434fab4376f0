class DatasetError(RuntimeError):
    """A dataset file is missing or malformed. The message names the file and what to do."""
