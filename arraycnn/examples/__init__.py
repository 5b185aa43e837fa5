"""Runnable examples: the lecture material rebuilt on arraycnn.

Run one with ``python -m arraycnn.examples.<name>``; each module has ``main(argv=None)``.
"""
