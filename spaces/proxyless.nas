# ProxylessNAS (Cai, Zhu & Han, ICLR 2019): a MobileNetV2-style chain for
# ImageNet where each of 21 blocks chooses an inverted-residual MBConv with
# kernel 3/5/7 and expansion 3/6; blocks with an identity shortcut (stride 1,
# same width) may also choose `zero`, which removes the block. Layout from the
# official code, mit-han-lab/proxylessnas search/models/super_nets/super_proxyless.py.
space proxyless(classes = 1000)

op mbconv_{k}x{k}_e{e} = conv(1, out = C_in * e) > bn > relu6 > dw_conv(k, stride) > bn > relu6 > conv(1) > bn

ops mbconv_ops = [mbconv_3x3_e3, mbconv_3x3_e6, mbconv_5x5_e3, mbconv_5x5_e6, mbconv_7x7_e3, mbconv_7x7_e6]

network:
    input 3 x 224 x 224
    stem conv(3, stride = 2, out = 32) > bn > relu6
    layer dw_conv(3) > bn > relu6 > conv(1, out = 16) > bn     # fixed 3x3 MBConv1
    choice 4 x mbconv_ops, out 24, stride 2, residual, skippable
    choice 4 x mbconv_ops, out 40, stride 2, residual, skippable
    choice 4 x mbconv_ops, out 80, stride 2, residual, skippable
    choice 4 x mbconv_ops, out 96, stride 1, residual, skippable
    choice 4 x mbconv_ops, out 192, stride 2, residual, skippable
    choice 1 x mbconv_ops, out 320, stride 1, residual, skippable
    head conv(1, out = 1280) > bn > relu6 > global_avg_pool > linear(classes)

alpha per instance
relax binary-gate
select argmax per layer

search:
    epochs = 120
    batch = 256
    train_portion = 0.5
    weights = sgd(lr = 0.025, momentum = 0.9, weight_decay = 4e-5, nesterov = true)
    lr_schedule = cosine(min = 0.0)
    arch = adam(lr = 1e-3, betas = (0.0, 0.999), weight_decay = 0.0)
    arch_every = 5       # grad_update_arch_param_every: one α step after every 5th weight step
    arch_start = 1       # no α step in the first epoch (after the code's warm-up, if any)
    order = 1

# training the derived network (`nasc train`): the official code's ImageNet defaults
# (search/imagenet_run_exp.py and run_manager.py): 300 epochs, batch 256, SGD Nesterov 0.05
# cosine to 0, weight decay 4e-5 but not on batch norms (no_decay_keys = "bn"), label smoothing 0.1,
# no gradient clipping
train:
    epochs = 300
    batch = 256
    weights = sgd(lr = 0.05, momentum = 0.9, weight_decay = 4e-5, nesterov = true)
    lr_schedule = cosine(min = 0.0)
    clip = 0
    label_smoothing = 0.1
    bn_weight_decay = false
