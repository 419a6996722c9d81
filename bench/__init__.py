"""Benchmarks: measured bits per dimension from real files, the model's -ELBO beside them,
and the classical lossless codecs on the same images in the same run."""
