"""Trainers: RecZero GRPO, SFT on teacher reasoning, RecOne (SFT then GRPO)."""
