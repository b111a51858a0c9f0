"""Loading models: ``circuits.load`` and the :class:`Diffusion` object it returns."""
