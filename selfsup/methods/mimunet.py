"""Masked image modelling through the segmentation model's own U-Net decoder (``method.name=mimunet``).

Why: at 5 labelled images the segmenter's decoder (as many weights as a resnet18's first three stages) starts
from random weights even when the encoder is pretrained; encoder-only pretraining gained little on the benchmark
(docs/results.md). Restoration pretraining of the whole encoder-decoder (Models Genesis, Zhou et al. 2019; SparK
reconstructs through a U-Net-like decoder too) gives the decoder a start that already draws edges at full
resolution. Here the MIM task of :mod:`selfsup.methods.mim` (hidden patches, per-patch-normalised targets, loss
on hidden patches only) is solved by smp's ``UnetDecoder`` built exactly as ``smp.Unet`` builds it, plus a 3x3
output conv; pretraining writes the decoder beside the encoder (``decoder.safetensors``, smp ``Unet.decoder`` key
names) and ``model.init_decoder`` loads it into a student's U-Net. The output conv is not kept: the student's
head predicts bones, not pixels.
"""

from __future__ import annotations

import torch
from segmentation_models_pytorch.base import initialization
from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder
from torch import nn

from selfsup.methods.base import register
from selfsup.methods.mim import MIM

SMP_UNET_DECODER = (256, 128, 64, 32, 16)  # smp.Unet's default decoder_channels


@register("mimunet")
class MIMUNet(MIM):
    def build_decoder(self, chans: list[int], cfg, width: int) -> None:
        widths = list(getattr(cfg, "decoder_channels", None) or SMP_UNET_DECODER)
        if len(widths) != 5:
            raise ValueError(f"method.decoder_channels needs 5 widths (one per decoder stage), got {widths}")
        # smp.Unet's own arguments for a non-VGG encoder of depth 5 (batch norm, no attention, no centre block)
        self.decoder = UnetDecoder(encoder_channels=list(chans), decoder_channels=widths, n_blocks=5)
        self.out = nn.Conv2d(widths[-1], chans[0], 3, padding=1)
        initialization.initialize_decoder(self.decoder)  # as smp.Unet.initialize() does
        initialization.initialize_head(self.out)

    def decode(self, feats: list[torch.Tensor]) -> torch.Tensor:
        try:
            y = self.decoder(feats)  # smp >= 0.5: the pyramid as a list
        except TypeError:
            y = self.decoder(*feats)  # older smp: one argument per level
        return self.out(y)
