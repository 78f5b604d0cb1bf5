# A small NAS-Bench-201-style cell space whose candidates include squeeze-and-
# excitation, a primitive nasc does not ship. It comes from a plugin, loaded
# explicitly (a .nas file never loads code):
#   nasc --plugin examples/plugin_op/se_op.py compile examples/plugin_op/se_space.nas
space se_cells(C = 8, N = 1, classes = 10)

op conv_{k}x{k}    = relu > conv(k, stride) > bn
op conv_se_{k}x{k} = relu > conv(k, stride) > bn > se(reduction = 4)   # `se` is the plugin's primitive
op skip_connect    = identity | on stride 2: factorized_reduce
op avg_pool_3x3    = avg_pool(3, stride)
op none            = zero(stride)

ops se_ops = [none, skip_connect, avg_pool_3x3, conv_3x3, conv_se_3x3]

cell cell(x0):
    nodes x1..x3 = sum
    edges dense: se_ops
    output x3

network:
    input 1 x 8 x 8
    stem conv(3, out = C) > bn
    stack N x cell, width C
    layer resblock(out = 2 * C, stride = 2)
    stack N x cell, width 2 * C
    head bn > relu > global_avg_pool > linear(classes)

alpha shared per cell
relax softmax
select argmax per edge

search:
    epochs = 10
    batch = 64
    weights = sgd(lr = 0.025, momentum = 0.9, weight_decay = 3e-4)
    lr_schedule = cosine(min = 0.001)
    arch = adam(lr = 3e-4, betas = (0.5, 0.999), weight_decay = 1e-3)

train:
    C = 16
    epochs = 20
    batch = 64
