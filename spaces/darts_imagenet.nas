# The DARTS space on DARTS' ImageNet network (224x224, three-conv stem, 1000 classes).
# From the DARTS paper (Liu, Simonyan & Yang, ICLR 2019, §3.3 and App. A.2.2) and
# quark0/darts cnn/model.py NetworkImageNet: the cells and ops of darts.nas.
# The parameters are a search-sized network (C = 16, 8 cells, like darts.nas; the search
# settings are darts.nas' CIFAR ones); `train:` sets the evaluation network, C = 48 and
# 14 cells: DARTS V2 has 4,718,752 weights there (the paper's 4.7M; aux head excluded).
# Multiply-adds count convolutions and linear layers: 529,911,552 for DARTS V2, equal to hooks on the
# official NetworkImageNet. The paper's 574M is not reproduced by any convention (adding BN, ReLU and
# pooling gives 541M); its counter was never released (quark0/darts issue #46, where others measured
# 523M and 545M). P-DARTS' 557M and PC-DARTS' 597M exceed the same count by 14-15M.
space darts_imagenet(C = 16, layers = 8, classes = 1000) extends "darts.nas"

network:
    input 3 x 224 x 224
    # the official stem0 (224 -> 56): the first cell's s0, at twice s1's resolution
    stem conv(3, stride = 2, out = C // 2) > bn > relu > conv(3, stride = 2, out = C) > bn
    # the official stem1 (56 -> 28): the first cell's s1 (a cell reads the last two layers)
    layer relu > conv(3, stride = 2, out = C) > bn
    # s0 at twice the cell's resolution is brought down by factorized_reduce (reduction_prev)
    preprocess relu > conv(1) > bn | on stride 2: factorized_reduce
    stack layers x normal, reduce at [layers // 3, 2 * layers // 3], widen 2 at reduce
    head global_avg_pool > linear(classes)   # AvgPool2d(7) on the last cells' 7x7 maps
    # AuxiliaryHeadImageNet on the second reduction cell's 7x7 output; the official code
    # leaves out the BN after the 2x2 convolution (commented out there), and so does this
    aux relu > avg_pool(5, stride = 2, pad = 0) > conv(1, out = 128) > bn > relu
        > conv(2, out = 768) > relu > flatten > linear(classes) after 2 * layers // 3, weight 0.4

# training the derived network (`nasc train`): the paper's ImageNet protocol, with the
# settings of quark0/darts cnn/train_imagenet.py (its last commit, f276dd3, defaults to the paper's
# 250 epochs at C = 48; earlier commits had 1000 epochs and C = 50). nasc has
# no ImageNet loader, nor the official RandomResizedCrop and colour-jitter augmentation: a
# dataset plugin supplies the data (docs/api.md); counts and exports need none.
train:
    C = 48
    layers = 14
    epochs = 250
    batch = 128
    weights = sgd(lr = 0.1, momentum = 0.9, weight_decay = 3e-5)
    lr_schedule = step(gamma = 0.97, every = 1)   # StepLR(1, gamma = 0.97): lr 0.1 · 0.97^epoch
    clip = 5
    drop_path = 0.0
    cutout = 0
    aux_weight = 0.4
    label_smoothing = 0.1
