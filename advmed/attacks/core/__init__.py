"""What every attack is built from: the :class:`~advmed.attacks.core.base.Attack` base and its
call (``base``, ``batch``, ``model_mode``, ``result``), the iterative loop (``iterative``,
``trace``), the objectives (``losses``: CE / Dice per pixel; ``margin_losses``: DLR, margin,
targeted CE) and the argument checks (``validation``). The attacks themselves live one per file
in :mod:`advmed.attacks` and its sub-packages."""
