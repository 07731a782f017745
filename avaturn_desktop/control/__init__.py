"""The local control API: the app's second door, for programs (Qt-free)."""
