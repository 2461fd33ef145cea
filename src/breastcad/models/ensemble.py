"""A deep ensemble (Lakshminarayanan et al. 2017): networks of one recipe trained on the same
split from different seeds, their class probabilities averaged.

`EnsembleNetwork.forward` returns the log of the members' mean softmax, so it is a network like
any other to everything downstream: softmax of its output is the averaged probability,
temperature scaling and the operating point are fitted on it, bundles, ONNX export and the
service take it as it is. Grad-CAM of an ensemble is the mean of its members' maps (see
`breastcad.explain.gradcam`), and a lesion-supervised ensemble's cell scores are the mean of
its members'.

Example:
    >>> from breastcad.models import create_model
    >>> net = EnsembleNetwork([create_model("idc_cnn", size=24) for _ in range(3)])
    >>> log_probs = net(torch.zeros(2, 24, 24, 3, dtype=torch.uint8))
    >>> bool(torch.allclose(log_probs.exp().sum(dim=1), torch.ones(2)))
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from breastcad.errors import ConfigError
from breastcad.models.image import ImageNetwork

NAME = "ensemble"


def mean_probability_logits(logits: torch.Tensor) -> torch.Tensor:
    """Logits (K, ..., num_classes) of K answers for the same images -> the log of their mean
    softmax (..., num_classes): what an ensemble's members or test-time views average to."""
    log_probs = torch.log_softmax(logits, dim=-1)
    return torch.logsumexp(log_probs, dim=0) - math.log(len(logits))


class EnsembleNetwork(nn.Module):
    """The mean of the members' class probabilities, as log-probabilities (N, num_classes)."""

    def __init__(self, members: Sequence[ImageNetwork]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ConfigError("an ensemble needs at least two member networks")
        first = members[0]
        for k, m in enumerate(members[1:], start=2):
            if m.preprocessing != first.preprocessing or m.num_classes != first.num_classes:
                raise ConfigError(
                    f"ensemble member {k} takes other input or classes than member 1 "
                    f"({m.preprocessing}, {m.num_classes} classes vs {first.preprocessing}, "
                    f"{first.num_classes}); members must share size, resize, channels and classes"
                )
        self.members = nn.ModuleList(members)
        self.num_classes, self.in_chans = first.num_classes, first.in_chans
        self.recipe = first.recipe
        self.arch: dict[str, Any] = {"name": NAME, "members": [m.arch for m in members]}
        if "background" in first.arch:  # the lesion-free class of lesion-supervised members
            self.arch["background"] = first.arch["background"]
        inits = sorted({m.init for m in members})
        self.init = inits[0] if len(inits) == 1 else "; ".join(inits)

    @property
    def preprocessing(self) -> dict[str, Any]:
        return self.members[0].preprocessing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.combine(self.member_logits(x))

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Each member's own logits, (members, N, num_classes)."""
        return torch.stack([m(x).float() for m in self.members])

    @staticmethod
    def combine(member_logits: torch.Tensor) -> torch.Tensor:
        """The ensemble's output from its members' logits (members, N, num_classes): the log of
        their mean softmax."""
        return mean_probability_logits(member_logits)

    def score_map(self, x: torch.Tensor) -> torch.Tensor:
        """A lesion-supervised ensemble's cell scores: the mean of its members'."""
        maps = [m.head.score_map(m.forward_features(x)).float() for m in self.members]
        return torch.stack(maps).mean(dim=0)
