"""
Rules a service applies, as plain data and small objects: connection
limits and timeouts, the buffer budget, idle sweeping, rate limits,
counters. They import nothing of sockecho's but each other.
"""
