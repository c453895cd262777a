"""Evaluation: tasks, metrics, code execution and prompting."""
