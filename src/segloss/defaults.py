"""Facts every part of segloss shares, defined once and importable without torch (data, configs, the CLI).

``IGNORE_INDEX`` (-100): the label of a token no loss looks at (prompt, padding); PyTorch's and transformers'
convention. ``DEFAULT_CE_WEIGHT`` (0.6): λ of the paper's objective ``L = λ·CE + (1 − λ)·L_task``.
`segloss.losses` exports both; import them from there (or from here where torch must stay unloaded).
"""

IGNORE_INDEX = -100
DEFAULT_CE_WEIGHT = 0.6
