"""ddaudit engine: data -> embed -> density -> distill -> evaluate. Never imports streamlit."""
__version__ = "0.1.0"
