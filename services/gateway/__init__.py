"""The REST gateway: FastAPI app, auth, idempotency and the operator dashboard."""
