"""Background jobs: one module per action kind, run by ``jobs.runner.run_action``."""
