"""Bridges to other training stacks; `segloss.integrations.trl` needs the extra: ``pip install segloss[trl]``."""
