"""MLPerf submissions, benchmark-neutral: the official sources, the official checker, packing.

The official code (checker, compliance scripts) is never copied into this repository: the
recipe get-mlperf-inference-src fetches it (or copies a local copy) into the cache, and it runs as it is.
"""
