"""
sockecho's reaches into Twisted's private names, each with a check and
a fallback: the epoll reactor without log context, the lean TCP
transport. Private: nothing outside sockecho imports these.
"""
