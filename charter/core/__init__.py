"""The pure domain core: constitutions, prompt templates and label math. No I/O here."""
