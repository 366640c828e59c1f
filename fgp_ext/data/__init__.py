"""Search spaces (architecture -> :class:`~fgp_ext.graph.ArchGraph` conversions) and file loaders.

Kept light on purpose: importing this package imports neither torch nor the compiled extension.
Import the submodules directly (``from fgp_ext.data import spaces, formats``).
"""
