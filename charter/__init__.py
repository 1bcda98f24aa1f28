"""Charter: constitutions in, AI-feedback labels and trained models out."""

__version__ = "0.1.0"
