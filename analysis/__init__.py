"""Offline analysis of finished or running dvla_hpc runs."""
