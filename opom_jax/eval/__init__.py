"""Measuring protection: protection@k (the reference protocol), LFW verification,
tables and figures."""
