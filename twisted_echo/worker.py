# -*- test-case-name: tests.test_deprecated_paths -*-
"""
Deprecated path, kept until 0.4; use L{twisted_echo.app.worker}.
"""

from twisted_echo.app.worker import main as main

if __name__ == "__main__":
    main()
