"""Adversarial tests of the code-action sandbox (issue 26)."""
