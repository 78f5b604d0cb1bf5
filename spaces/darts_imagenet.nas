# DARTS' ImageNet (mobile setting) evaluation network (Liu, Simonyan & Yang,
# ICLR 2019, §3.3 and App. A.2.2; quark0/darts cnn/model.py NetworkImageNet):
# the cells and ops of the DARTS space (darts.nas) on a three-convolution stem
# for 224x224 inputs, C = 48, 14 cells, 1000 classes.
space darts_imagenet(C = 16, layers = 8, classes = 1000) extends "darts.nas"

network:
    input 3 x 224 x 224
    # the official stem0 (224 -> 56): the first cell's s0, at twice s1's resolution
    stem conv(3, stride = 2, out = C // 2) > bn > relu > conv(3, stride = 2, out = C) > bn
    # the official stem1 (56 -> 28): the first cell's s1 (cells read the last two layers)
    layer relu > conv(3, stride = 2, out = C) > bn
    preprocess relu > conv(1) > bn | on stride 2: factorized_reduce
    stack layers x normal, reduce at [layers // 3, 2 * layers // 3], widen 2 at reduce
    head global_avg_pool > linear(classes)   # AvgPool2d(7) on the 7x7 maps of the last cells
    # AuxiliaryHeadImageNet, on the 7x7 output of the second reduction cell; the official
    # code leaves out the BN after the 2x2 convolution (commented out there)
    aux relu > avg_pool(5, stride = 2, pad = 0) > conv(1, out = 128) > bn > relu
        > conv(2, out = 768) > relu > flatten > linear(classes) after 2 * layers // 3, weight 0.4

# training the derived network (`nasc train`): the DARTS ImageNet protocol (paper App. A.2.2;
# quark0/darts cnn/train_imagenet.py: label smoothing 0.1, auxiliary weight 0.4, clip 5, no drop path)
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
