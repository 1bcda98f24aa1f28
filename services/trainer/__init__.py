"""Trainer service: trains models on the datasets Charter exports (PM, SFT, DPO, PPO)."""
