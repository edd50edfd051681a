"""
The services: the stream base (L{twisted_echo.services.stream}), TCP
echo, upper, welcome, whoami and UDP echo.
"""
