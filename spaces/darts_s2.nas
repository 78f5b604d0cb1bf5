# RobustDARTS space S2 (Zela et al., ICLR 2020): the DARTS space where every
# edge chooses between skip_connect and sep_conv_3x3 (automl/RobustDARTS
# src/spaces.py, `primitives_2`). R-DARTS searches it second order.
space darts_s2 extends "darts.nas"
ops darts_ops = [skip_connect, sep_conv_3x3]
search:
    order = 2
