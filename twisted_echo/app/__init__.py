"""
The application: twistd's options and what builds the service tree
from them, the single-process server, the supervisor and its workers,
inherited listening sockets, and process tuning under twistd.
"""
