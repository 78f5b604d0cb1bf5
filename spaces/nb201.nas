# NAS-Bench-201 (Dong & Yang, ICLR 2020): a cell of 4 nodes whose 6 edges each
# choose one of 5 ops, 5^6 = 15,625 cells; 3 stages of 5 cells joined by
# residual reduction blocks, one α shared by every cell. As in AutoDL-Projects'
# search model (xautodl/models/cell_searchs), convolutions carry a bias while
# searching (affine-free BN) and none in the benchmark networks.
space nb201(C = 16, N = 5, classes = 10)

op nor_conv_{k}x{k} = relu > conv(k, stride, bias = searching) > bn
op avg_pool_3x3     = avg_pool(3, stride)
op skip_connect     = identity | on stride 2: factorized_reduce
op none             = zero(stride)

ops nb201_ops = [none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3]

cell cell(x0):
    nodes x1..x3 = sum
    edges dense: nb201_ops
    output x3

network:
    input 3 x 32 x 32
    stem conv(3, out = C) > bn
    stack N x cell, width C
    layer resblock(out = 2 * C, stride = 2)
    stack N x cell, width 2 * C
    layer resblock(out = 4 * C, stride = 2)
    stack N x cell, width 4 * C
    head bn > relu > global_avg_pool > linear(classes)

alpha shared per cell
relax softmax
select argmax per edge

search:
    epochs = 50
    batch = 64
    train_portion = 0.5
    weights = sgd(lr = 0.025, momentum = 0.9, weight_decay = 5e-4, nesterov = true)
    lr_schedule = cosine(min = 0.001)
    clip = 5
    arch = adam(lr = 3e-4, betas = (0.5, 0.999), weight_decay = 1e-3)
    order = 1
    # AutoDL's configs/nas-benchmark/algos/DARTS.config and scripts-search/NAS-Bench-201-algos.
    # Its cosine is per epoch too (the per-iteration update only matters in warm-up, 0 here).
    # Not reproduced: its DARTS-V1 and GDAS step the weights before α (nasc steps α first, as
    # DARTS and AutoDL's DARTS-V2 do), and its clip_grad_norm_(network.parameters(), 5) also
    # counts α's gradient, so its clipping scales the weights' gradient slightly more.
    # GDAS as AutoDL ran it: --relax gdas --relax-opt scalar_others=true --opt batch=64

# training a derived cell (`nasc train`): NAS-Bench-201's 200-epoch protocol
# (AutoDL-Projects configs/nas-benchmark/hyper-opts/200E.config)
train:
    epochs = 200
    batch = 256
    weights = sgd(lr = 0.1, momentum = 0.9, weight_decay = 5e-4, nesterov = true)
    lr_schedule = cosine(min = 0.0)
    clip = 0   # no gradient clipping: the benchmark's training loop (exps/NAS-Bench-201/functions.py) has none
