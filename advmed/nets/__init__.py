"""Plain nn.Modules (no Lightning): the networks that LightningModules wrap."""

from advmed.nets.advgan import AdvGANDiscriminator, AdvGANGenerator
from advmed.nets.diff_augment import DiffAugment
from advmed.nets.resnet import ResNetClassifier
from advmed.nets.srgan import SRDiscriminator, SRResNet
from advmed.nets.stylegan2 import MappingNetwork, StyleGAN2Discriminator, StyleGAN2Generator, style_mix
from advmed.nets.unet import UNet
from advmed.nets.vgg_features import VGGFeatures

__all__ = ["AdvGANDiscriminator", "AdvGANGenerator", "DiffAugment", "MappingNetwork", "ResNetClassifier", "SRDiscriminator", "SRResNet", "StyleGAN2Discriminator",
           "StyleGAN2Generator", "UNet", "VGGFeatures", "style_mix"]
