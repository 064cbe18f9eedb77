"""Runnable pipelines (the dataset build, the offline demo) and the command line."""
