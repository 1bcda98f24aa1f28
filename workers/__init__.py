"""Worker processes: inference engines and task runners."""
