"""A local stand-in of the Avaturn Live service (FastAPI), Qt-free."""
