"""The papers' figures: which tables each paper pipeline writes (:mod:`.tables`), their spread over
seeds (:mod:`.over_seeds`), the paper claims checked on them (:mod:`.claims`), and the README blocks
generated from recorded runs (:mod:`.readme_figures`)."""
