# RobustDARTS space S4 (Zela et al., ICLR 2020): every edge chooses between
# sep_conv_3x3 and `noise`, which outputs N(0, 1) noise of its input's shape
# and ignores the input's values (automl/RobustDARTS src/spaces.py,
# `primitives_4`; src/operations.py NoiseOp). Searched second order.
space darts_s4 extends "darts.nas"
op noise = noise(stride)
ops darts_ops = [noise, sep_conv_3x3]
search:
    order = 2
