"""digitdet: find every digit in a photo (class + box) and read the whole number."""
__version__ = "0.2.0"
