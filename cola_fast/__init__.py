"""cola_fast: a fast, tested implementation of CoLA (Zhang et al., CVPR 2021) for
weakly-supervised temporal action localization.

Public pieces: cola_fast.ops (fused ops with backends), cola_fast.reference (the
pure-PyTorch oracle), cola_fast.model, cola_fast.data, cola_fast.evaluation, and the
commands `python -m cola_fast.train`, `python -m cola_fast.evaluate`.
"""
__version__ = "0.1.0"
