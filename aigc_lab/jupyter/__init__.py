"""The Jupyter layer: the comm bridge to the panel (and, later, magics and widgets).

This is the only package that imports IPython, ipywidgets or comm. It adds sinks to the bus and
never reaches into engine internals.
"""

from .comm_bridge import CommBridge, connect, disconnect

__all__ = ["CommBridge", "connect", "disconnect"]
