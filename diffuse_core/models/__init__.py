"""The trained networks and their one on-disk format: the healthy denoiser, ACAT's autoencoder and classifier,
checkpoints with model cards, where the weights live, and the device/precision choice."""
