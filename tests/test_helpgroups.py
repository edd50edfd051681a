# -*- test-case-name: tests.test_helpgroups -*-
"""
Tests for L{twisted_echo.app.helpgroups}: C{--help}'s options under
headings. The whole C{--help} of C{twistd sockecho}: L{tests.test_tap}.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from twisted_echo.app import registry
from twisted_echo.app.helpgroups import HELP_GROUPS, help_groups, regroup

#: What C{usage.Options.getUsage} writes: entries (some over two lines),
#: a blank line, then the rest.
USAGE = (
    "Options:\n"
    "      --idle-timeout=  Close a connection with no traffic\n"
    "                       for this many seconds.\n"
    "      --echo=          TCP echo.\n"
    "  -h, --help           Display this help and exit.\n"
    "\n"
    "Long description.\n"
)


class RegroupTests(TestCase):
    def test_grouped_in_order_other_last(self) -> None:
        """
        Entries go under their group's heading, in L{HELP_GROUPS}' order,
        listeners first; an option in no group (C{--help}) comes last under
        "Other"; what follows the listing is kept.
        """
        listeners, timeouts = HELP_GROUPS[0][0], "Timeouts, in seconds"
        self.assertEqual(
            regroup(USAGE),
            f"{listeners}:\n"
            "      --echo=          TCP echo.\n"
            "\n"
            f"{timeouts}:\n"
            "      --idle-timeout=  Close a connection with no traffic\n"
            "                       for this many seconds.\n"
            "\n"
            "Other:\n"
            "  -h, --help           Display this help and exit.\n"
            "\n"
            "Long description.\n",
        )

    def test_other_text_unchanged(self) -> None:
        self.assertEqual(regroup("Usage: x\n"), "Usage: x\n")

    def test_listeners_from_the_registry(self) -> None:
        """
        The listener group names every registered service's C{--NAME} and,
        for one with a default, C{--no-NAME}.
        """
        names = help_groups()[0][1]
        for service in registry.SERVICES:
            self.assertIn(service.name, names)
            if service.default is not None:
                self.assertIn(f"no-{service.name}", names)
