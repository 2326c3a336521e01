"""The one exception type for mistakes a user can fix; the CLI prints it as a one-line error."""


class UserError(Exception):
    """Bad input (file, option, checkpoint, request): the message names it and says what is wrong."""
