"""ddaudit engine: data -> embed -> density -> distill -> evaluate. Never imports streamlit."""
from .version import __version__

__all__ = ["__version__"]
