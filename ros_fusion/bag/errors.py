"""The one exception the bag layer raises, so callers catch a single type."""

from __future__ import annotations


class BagError(Exception):
    """A bag is missing, corrupt, truncated, of an unsupported layout, or misused.

    The message names the path and what is wrong in one line, fit to print to a
    user without a traceback (the CLI does exactly that, exit code 2).
    """
