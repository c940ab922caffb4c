"""The error a user can fix: launchers print it as one line, never a traceback."""


class UserError(ValueError):
  """Bad input (a flag, a file, a folder); the message names it."""
