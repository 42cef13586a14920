"""The one error base of mscgym, importable from every layer (it imports nothing).

Every error mscgym raises on purpose derives from :class:`MSCError`, so a caller (the
``mscgym`` command line above all) catches one class and prints one clean line; an
exception of any other type escaping a public entry point is a bug.
"""


class MSCError(Exception):
    """Base class of every error mscgym raises on purpose."""
