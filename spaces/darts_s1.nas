# RobustDARTS space S1 (Zela et al., "Understanding and Robustifying
# Differentiable Architecture Search", ICLR 2020): the DARTS space where each
# edge chooses between its own pair of ops, different in normal and reduction
# cells. The pairs are those of the official code, automl/RobustDARTS
# src/spaces.py (`primitives_1`), in its edge order.
space darts_s1 extends "darts.nas"

cell normal(s0, s1):
    nodes n0..n3 = sum
    edge s0 -> n0: [skip_connect, dil_conv_3x3]
    edge s1 -> n0: [skip_connect, dil_conv_5x5]
    edge s0 -> n1: [skip_connect, dil_conv_5x5]
    edge s1 -> n1: [skip_connect, sep_conv_3x3]
    edge n0 -> n1: [skip_connect, dil_conv_3x3]
    edge s0 -> n2: [max_pool_3x3, skip_connect]
    edge s1 -> n2: [skip_connect, sep_conv_3x3]
    edge n0 -> n2: [skip_connect, sep_conv_3x3]
    edge n1 -> n2: [skip_connect, dil_conv_3x3]
    edge s0 -> n3: [skip_connect, sep_conv_3x3]
    edge s1 -> n3: [max_pool_3x3, skip_connect]
    edge n0 -> n3: [skip_connect, dil_conv_3x3]
    edge n1 -> n3: [dil_conv_3x3, dil_conv_5x5]
    edge n2 -> n3: [dil_conv_3x3, dil_conv_5x5]
    output concat(n0..n3)

cell reduce = normal with stride 2 on inputs:
    edge s0 -> n0: [max_pool_3x3, avg_pool_3x3]
    edge s1 -> n0: [max_pool_3x3, dil_conv_3x3]
    edge s0 -> n1: [max_pool_3x3, avg_pool_3x3]
    edge s1 -> n1: [max_pool_3x3, avg_pool_3x3]
    edge n0 -> n1: [skip_connect, dil_conv_5x5]
    edge s0 -> n2: [max_pool_3x3, avg_pool_3x3]
    edge s1 -> n2: [max_pool_3x3, sep_conv_3x3]
    edge n0 -> n2: [skip_connect, dil_conv_3x3]
    edge n1 -> n2: [skip_connect, dil_conv_5x5]
    edge s0 -> n3: [max_pool_3x3, avg_pool_3x3]
    edge s1 -> n3: [max_pool_3x3, avg_pool_3x3]
    edge n0 -> n3: [skip_connect, dil_conv_5x5]
    edge n1 -> n3: [skip_connect, dil_conv_5x5]
    edge n2 -> n3: [skip_connect, dil_conv_5x5]

# R-DARTS searches S1-S4 with second-order DARTS (src/search/args.py, --unrolled)
search:
    order = 2
