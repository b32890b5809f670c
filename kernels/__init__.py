"""Triton kernels of cola_fast, installed as cola_fast.kernels.

One module per fused op, named as the op: mine_snippets.py, snico_loss.py,
temporal_conv_embed.py. On a CPU they run only under the Triton interpreter
(TRITON_INTERPRET=1 set before triton is imported)."""
