# PC-DARTS: Partial Channel Connections for Memory-Efficient Architecture
# Search (Xu et al., ICLR 2020). The DARTS space searched with 1/K of each
# edge's channels through the mixed op (K = 4), channel shuffle, and edge
# normalisation β; α and β start training at epoch 15. Defaults from the
# official code, yuhuixu1993/PC-DARTS train_search.py.
space pcdarts extends "darts.nas"

relax partial-channel(k = 4, edge_norm = true)

search:
    batch = 256
    weights = sgd(lr = 0.1, momentum = 0.9, weight_decay = 3e-4)
    lr_schedule = cosine(min = 0.0)
    arch = adam(lr = 6e-4, betas = (0.5, 0.999), weight_decay = 1e-3)
    arch_start = 15

# training the derived network: PC-DARTS train.py (drop-path 0.3), otherwise as DARTS
train:
    drop_path = 0.3
