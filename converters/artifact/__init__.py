"""The artifact contract: what a converter writes and every other part of sluice reads.

A leaf (stdlib and numpy only) that ``sluice.converters``, ``sluice.server`` and ``sluice.monitoring`` all
import, so none of them has to import another to agree on a model's files, its tensors' datatypes, its
reference profile or the errors that cross the wire.
"""
