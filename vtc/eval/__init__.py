"""Evaluation: the lmms-eval model plugin, local tasks, metrics (tokens, TokDense)."""
