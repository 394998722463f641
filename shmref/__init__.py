"""shmref: sharing state between Python processes, three ways, measured.

Each primitive lives in a module of its own that imports only the standard
library, so that one file can be copied into a project: :mod:`shmref.counter`.
"""

__version__ = "0.1.0"
