# ROME: Robustifying Memory-Efficient NAS via Topology Disentanglement and
# Gradient Accumulation (Wang et al., ICCV 2023; arXiv 2011.11233). Space S0:
# the DARTS space without `none`, so every node keeps exactly two inputs.
# Topology β per edge with Gumbel-Top2 edge sampling per node, one GDAS-sampled
# op per edge, K = 7 sampled sub-networks per step (α/β: mean of K gradients,
# w: sum). No official code exists; settings follow the paper's text (§3-4):
# 8 cells, C = 16, 50 epochs, SGD momentum 0.9 lr 0.05, Adam 3e-4 for α and β.
# Not stated in the paper (UNVERIFIED, DARTS' values kept): batch, weight
# decays, lr schedule; the τ schedule (GDAS code's 10 -> 0.1 assumed).
space rome extends "darts.nas"

ops darts_ops = [max_pool_3x3, avg_pool_3x3, skip_connect,
                 sep_conv_3x3, sep_conv_5x5, dil_conv_3x3, dil_conv_5x5]

relax rome

search:
    epochs = 50
    weights = sgd(lr = 0.05, momentum = 0.9, weight_decay = 3e-4)
    arch = adam(lr = 3e-4, betas = (0.5, 0.999), weight_decay = 1e-3)
