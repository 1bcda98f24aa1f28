"""The operator dashboard: server-rendered pages over the caller's project."""
