"""What every attack is built from: the :class:`~advmed.attacks.core.base.Attack` base and its
call (``base``, ``batch``, ``model_mode``, ``result``), the iterative loop (``iterative``,
``trace``), APGD's run shared by APGD and SEA (``apgd_loop``), FAB's projections onto a
hyperplane within the box (``fab_projections``), the objectives (``losses``: CE / Dice per pixel;
``margin_losses``: DLR, margin, targeted CE; ``segmentation_losses``: SEA's masked and balanced CE
and Jensen-Shannon) and the argument checks (``validation``). The attacks themselves live one per
file in :mod:`advmed.attacks` and its sub-packages."""
