"""Inference backends implementing :class:`charter.core.engine.Engine`."""
