"""The root of the errors a user can act on (bad settings, missing weights, unreadable inputs, ...).

Each room raises its own subclass with a message that says what is wrong and what to do; the command line
prints those messages without a traceback and the node logs them.
"""


class UserError(Exception):
    """A problem in the user's inputs, settings or environment, explained by the message."""
