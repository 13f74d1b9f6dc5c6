"""DDP whose ``find_unused_parameters`` comes from the module being trained, so that one
``trainer=ddp`` serves every model (DESIGN contract 8: no per-model switch in the entry point).

A classifier or U-Net reaches every parameter in each backward pass, and DDP's search for unused
ones would only cost time; a GAN's backward passes each reach one network, and without the search
DDP waits for gradients that never come. The module says which it is.
"""

from __future__ import annotations

from lightning.pytorch.strategies import DDPStrategy


class ModuleDDPStrategy(DDPStrategy):
    """``DDPStrategy`` with ``find_unused_parameters`` from the LightningModule's
    ``ddp_find_unused_parameters`` attribute (False when absent), unless given explicitly."""

    strategy_name = "advmed_ddp"

    def _setup_model(self, model):
        if "find_unused_parameters" not in self._ddp_kwargs:
            module = self.lightning_module
            self._ddp_kwargs["find_unused_parameters"] = bool(getattr(module, "ddp_find_unused_parameters", False))
        return super()._setup_model(model)
