"""The napari layer of the plugin: reader, sample data and widgets.

Only this package imports napari or Qt; it wires the core to the viewer and holds no logic of
its own beyond display.
"""
