# A NASNet-like cell space written from scratch (no import, no extends): two
# inputs, five intermediate nodes, every node choosing its two strongest inputs
# among all earlier states, one of six ops per kept edge. The ops are our own,
# among them a composite one (`mbconv`, an inverted bottleneck built from
# primitives) and one defined in terms of another (`sep_conv_x2`).
space nasnet_mini(C = 8, layers = 5, classes = 10)

op relu_sep(k, s)   = relu > dw_conv(k, s) > conv(1) > bn           # a depthwise-separable conv, stride s
op sep_3x3          = relu_sep(3, stride)
op sep_3x3_x2       = relu_sep(3, stride) > relu_sep(3, 1)            # ops built from another op
op mbconv_{k}x{k}   = conv(1, out = 3 * C_in) > bn > relu6            # MobileNetV2 inverted bottleneck,
                      > dw_conv(k, stride) > bn > relu6 > conv(1) > bn   # expansion 3
op skip_connect     = identity | on stride 2: factorized_reduce
op max_pool_3x3     = max_pool(3, stride) > bn if searching
op none             = zero(stride)

ops mini_ops = [none, skip_connect, max_pool_3x3, sep_3x3, sep_3x3_x2, mbconv_3x3]

cell normal(s0, s1):                # outputs of the two previous cells
    nodes n0..n4 = sum              # five nodes, as in NASNet
    edges dense: mini_ops
    output concat(n0..n4)
cell reduce = normal with stride 2 on inputs

network:
    input 3 x 32 x 32
    stem conv(3, out = 2 * C) > bn
    preprocess relu > conv(1) > bn | on stride 2: factorized_reduce
    stack layers x normal, reduce at [layers // 3, 2 * layers // 3], widen 2 at reduce
    head global_avg_pool > linear(classes)

alpha shared per cell
relax softmax
select top 2 per node excluding none

search:
    epochs = 20
    batch = 64
    train_portion = 0.5
    weights = sgd(lr = 0.05, momentum = 0.9, weight_decay = 3e-4)
    lr_schedule = cosine(min = 0.001)
    arch = adam(lr = 6e-4, betas = (0.5, 0.999), weight_decay = 1e-3)

train:
    C = 16
    layers = 8
    epochs = 50
    batch = 64
    weights = sgd(lr = 0.05, momentum = 0.9, weight_decay = 3e-4)
    lr_schedule = cosine(min = 0.0)
    drop_path = 0.1
