"""Plain functions behind train.py and infer.py (testable without a command line)."""
