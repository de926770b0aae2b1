"""Latent edits: InterfaceGAN directions, GANSpace components, StyleCLIP mappers and the edit chain."""
