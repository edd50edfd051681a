# -*- test-case-name: tests.test_client_main -*-
"""
Errors a user can cause: each is reported as one line on standard error and
a non-zero exit status, never a traceback.
"""

from __future__ import annotations


class ClientError(Exception):
    """
    Something the user asked for cannot be done (e.g. the connection was
    refused); C{str()} is one line saying what and why.

    @cvar exit_status: the process's exit status for it.
    """

    exit_status = 1


class ClientUsageError(ClientError):
    """
    A bad option or endpoint string.
    """

    exit_status = 2
