# RobustDARTS space S3 (Zela et al., ICLR 2020): every edge chooses among
# none, skip_connect and sep_conv_3x3 (automl/RobustDARTS src/spaces.py,
# `primitives_3`). R-DARTS searches it second order.
space darts_s3 extends "darts.nas"
ops darts_ops = [none, skip_connect, sep_conv_3x3]
search:
    order = 2
