"""Evaluation of a checkpoint (`python -m dvla_hpc.eval`): which episodes to run, running them,
gathering them from the ranks, and the report."""
