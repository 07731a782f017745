"""Qt-free async services: the API client, session controller, speech queue and task log."""
