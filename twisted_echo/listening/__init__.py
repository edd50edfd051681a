"""
Where services listen: endpoints, addresses, the PROXY header, TLS.
"""
