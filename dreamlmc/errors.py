"""The one exception type for user mistakes; the CLI turns it into one line and a non-zero exit."""


class DreamlmcError(Exception):
    """A mistake the user can fix (bad prompt, missing model, bad config key, ...). Bugs raise anything else."""
