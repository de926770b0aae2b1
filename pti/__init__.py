"""Pivotal Tuning Inversion (PTI) on StyleGAN2: generator, weights, projection, tuning, pipeline."""
