"""The commands operators run: ``distillery up`` (the launcher), ``status``, ``demo``, the rest.

The top layer: it may import every package below it, and none imports it.
"""
