"""
What sockecho asks of the C library and the process, below every other
layer: glibc's malloc tuning (L{twisted_echo.system.malloc}). These modules
import nothing of sockecho's and no private Twisted name; any layer may
import them.
"""
