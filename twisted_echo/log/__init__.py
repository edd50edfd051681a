"""
sockecho's log observers and formats (text, JSON), and their set-up.
"""
