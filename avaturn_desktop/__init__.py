"""Avaturn Desktop: a desktop control panel for Avaturn Live talking avatars."""

__version__ = "0.1.0"
