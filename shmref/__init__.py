"""shmref: sharing state between Python processes, three ways, measured.

Each primitive lives in a module of its own that imports only the standard
library (numpy optional), so that one file can be copied into a project:
:mod:`shmref.counter`, :mod:`shmref.value`, :mod:`shmref.arrays`,
:mod:`shmref.metrics`, :mod:`shmref.locks`, :mod:`shmref.table` and
:mod:`shmref.channel`. Each holds the protocol of its primitive and three
implementations: ctypes shared memory, a Queue to an owner process, and a
Manager server.
"""

__version__ = "0.1.0"
