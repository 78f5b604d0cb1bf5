# DARTS: Differentiable Architecture Search (Liu, Simonyan & Yang, ICLR 2019).
# The CIFAR-10 search space of the paper (§2.1, App. A.1.1) and of the official
# code (quark0/darts cnn/model_search.py): 8 ops, 2 inputs + 4 nodes, 14 edges,
# 8 cells with reductions at 1/3 and 2/3, C = 16; 1,930,618 supernet weights.
space darts(C = 16, layers = 8, classes = 10)

op sep_conv_{k}x{k} = relu > dw_conv(k, stride) > conv(1) > bn > relu > dw_conv(k) > conv(1) > bn
op dil_conv_{k}x{k} = relu > dw_conv(k, stride, dilation = 2) > conv(1) > bn
op skip_connect     = identity | on stride 2: factorized_reduce
op max_pool_3x3     = max_pool(3, stride) > bn if searching   # BN after pooling in the supernet only
op avg_pool_3x3     = avg_pool(3, stride) > bn if searching
op none             = zero(stride)

ops darts_ops = [none, max_pool_3x3, avg_pool_3x3, skip_connect,
                 sep_conv_3x3, sep_conv_5x5, dil_conv_3x3, dil_conv_5x5]

cell normal(s0, s1):              # s0, s1: outputs of the two previous cells
    nodes n0..n3 = sum
    edges dense: darts_ops        # every node reads both inputs and every earlier node
    output concat(n0..n3)
cell reduce = normal with stride 2 on inputs

network:
    input 3 x 32 x 32
    stem conv(3, out = 3 * C) > bn
    preprocess relu > conv(1) > bn | on stride 2: factorized_reduce
    stack layers x normal, reduce at [layers // 3, 2 * layers // 3], widen 2 at reduce
    head global_avg_pool > linear(classes)
    aux relu > avg_pool(5, stride = 3, pad = 0) > conv(1, out = 128) > bn > relu
        > conv(2, out = 768) > bn > relu > flatten > linear(classes) after 2 * layers // 3, weight 0.4

alpha shared per cell
relax softmax
select top 2 per node excluding none

search:
    epochs = 50
    batch = 64
    train_portion = 0.5
    weights = sgd(lr = 0.025, momentum = 0.9, weight_decay = 3e-4)
    lr_schedule = cosine(min = 0.001)
    clip = 5
    arch = adam(lr = 3e-4, betas = (0.5, 0.999), weight_decay = 1e-3)
    order = 1

# training the derived network (`nasc train`): the DARTS CIFAR-10 evaluation protocol
train:
    C = 36
    layers = 20
    epochs = 600
    batch = 96
    weights = sgd(lr = 0.025, momentum = 0.9, weight_decay = 3e-4)
    lr_schedule = cosine(min = 0.0)
    clip = 5
    drop_path = 0.2
    cutout = 16
    aux_weight = 0.4
