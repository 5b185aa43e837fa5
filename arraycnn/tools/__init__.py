"""Tools around the library: ``arraycnn bench``, ``tune`` and ``demo``, and the one registry
of reference cases they share with the asv suite.

Nothing here is imported by ``import arraycnn`` (nor by conv2d, the filters or the nn
package): the command-line entry point imports a tool only when it runs.
"""
