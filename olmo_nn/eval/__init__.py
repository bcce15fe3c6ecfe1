"""Downstream evaluation: task data, task formats and rank-classification instances."""
