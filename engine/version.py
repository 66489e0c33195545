"""The version of ddaudit (a foundation: any layer may read it; the bundled example records it)."""
__version__ = "0.1.0"
