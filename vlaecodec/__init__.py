"""vlaecodec: a learned lossless image codec built on the Variational Lossy Autoencoder."""
__version__ = "0.1.0"
