"""Attacks whose perturbation comes from a trained generator, applied from its checkpoint:
AdvGAN (``advgan``) and the VAE-GAN deformation + intensity attacker (``deformation``)."""
