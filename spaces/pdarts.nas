# P-DARTS: Progressive Differentiable Architecture Search (Chen, Xie, Wu &
# Tian, ICCV 2019). The DARTS space searched in three stages of 5, 11 and 17
# cells; after each stage every edge keeps only its strongest ops (8, 5, then
# 3), Dropout after skip_connect regularises each stage's supernet, and the
# final normal cell keeps at most 2 skip-connects. Settings from the official
# code, chenxin061/pdarts train_search.py, with the README's CIFAR-10 dropout
# rates 0.1, 0.4, 0.7; the stages run in runtime/progressive.py.
space pdarts(layers = 5) extends "darts.nas"

search:
    stages = [stage(layers = 5, keep = 8, skip_dropout = 0.1),
              stage(layers = 11, keep = 5, skip_dropout = 0.4),
              stage(layers = 17, keep = 3, skip_dropout = 0.7)]
    epochs = 25          # per stage
    batch = 96
    train_portion = 0.5
    weights = sgd(lr = 0.025, momentum = 0.9, weight_decay = 3e-4)
    lr_schedule = cosine(min = 0.0)
    clip = 5
    arch = adam(lr = 6e-4, betas = (0.5, 0.999), weight_decay = 1e-3)
    arch_clip = 5
    arch_start = 10      # per stage: weight-only epochs (eps_no_archs)
    order = 1
    skip_limit = 2       # final rule: at most 2 skip_connect in the normal cell

# training the derived network: P-DARTS train_cifar.py (batch 128, drop-path 0.3), otherwise as DARTS
train:
    batch = 128
    drop_path = 0.3
