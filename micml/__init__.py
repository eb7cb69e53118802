"""MICML: detection of small moving objects in satellite and drone video."""

__version__ = "0.1.0"
