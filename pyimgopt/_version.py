"""pyimgopt's version, in a module of its own so any part may read it without import cycles."""

__version__ = "0.1.0"
