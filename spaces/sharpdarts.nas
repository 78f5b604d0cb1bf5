# sharpDARTS (Hundt, Jain & Hager, 2019): the DARTS space with SharpSepConv
# ops, where `dil_conv` is a doubled separable block with a dilated first
# depthwise convolution (so it differs from DARTS' single-block DilConv),
# searched with batch 48 for 120 epochs. "flood" ops widen the middle to 4·C.
# Definitions from the official code, ahundt/sharpDARTS cnn/operations.py
# (SharpSepConv) and the README's SharpSepConvDARTS search command.
space sharpdarts extends "darts.nas"

op sep_conv_{k}x{k}   = relu > dw_conv(k, stride) > conv(1) > bn > relu > dw_conv(k) > conv(1) > bn
op dil_conv_{k}x{k}   = relu > dw_conv(k, stride, dilation = 2) > conv(1) > bn > relu > dw_conv(k) > conv(1) > bn
op flood_conv_{k}x{k} = relu > dw_conv(k, stride) > conv(1, out = 4 * C) > bn > relu > dw_conv(k) > conv(1) > bn
op dil_flood_conv_{k}x{k} = relu > dw_conv(k, stride, dilation = 2) > conv(1, out = 4 * C) > bn > relu > dw_conv(k) > conv(1) > bn
op max_pool_3x3       = max_pool(3, stride) > bn if searching
op avg_pool_3x3       = avg_pool(3, stride) > bn if searching

ops darts_ops = [none, max_pool_3x3, avg_pool_3x3, skip_connect,
                 sep_conv_3x3, sep_conv_5x5, dil_conv_3x3, dil_conv_5x5]
ops sharper_ops = [none, max_pool_3x3, avg_pool_3x3, skip_connect, sep_conv_3x3, sep_conv_5x5,
                   sep_conv_7x7, dil_conv_3x3, dil_conv_5x5, flood_conv_3x3, flood_conv_5x5, dil_flood_conv_3x3]

relax softmax(weighting = "max_w")   # sharpDARTS' Max-W weighting; use `--relax darts` for plain DARTS

search:
    epochs = 120
    batch = 48
    weights = sgd(lr = 0.025, momentum = 0.9, weight_decay = 3e-4)
    lr_schedule = cosine_power(min = 1e-4, exponent = 2, warmup = 5)
    cutout = 16

# training the derived network: the README's SharpSepConvDARTS command with cnn/train.py's defaults
# (2000 epochs, batch 64, lr 0.025 to 1e-8 by cosine power annealing with 5 warm-up epochs, --auxiliary
# --cutout); C = 36, 20 cells, drop path 0.2, clip 5 and weight decay 3e-4 are DARTS' and come from darts.nas.
# AutoAugment (--autoaugment) is not implemented.
train:
    epochs = 2000
    batch = 64
    lr_schedule = cosine_power(min = 1e-8, exponent = 2, warmup = 5)
