"""Diffusion core: noise schedules, the forward process and loss, exact mixture denoisers."""
