"""Qt-free core: models, errors, settings, the chunker and state enums."""
