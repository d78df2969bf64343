"""The models the benchmark times: each with one fixed batch on the device and its paper's base optimizer.

torchvision and timm are imported only by the workloads that need them (extras ``timm``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

CIFAR_TRAIN = 50_000  # CIFAR-10/100 training images
IMAGENET_TRAIN = 1_281_167  # ImageNet-1k training images
IWSLT_TRAIN = 160_239  # IWSLT14 De-En training sentence pairs after fairseq's prepare-iwslt14.sh


@dataclass
class Workload:
    """A model, a batch and how to get its loss; ``base``/``base_kwargs`` as in the paper's setting."""

    name: str
    model: nn.Module
    batch: tuple[Tensor, ...]
    loss: Callable[[nn.Module, tuple[Tensor, ...]], Tensor]
    base: str
    base_kwargs: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 0
    epoch_samples: int = 0  # the training set's size, for XSAM's once-per-epoch probe

    def compute_loss(self, model: nn.Module) -> Tensor:
        return self.loss(model, self.batch)


def _classify(model: nn.Module, batch: tuple[Tensor, ...]) -> Tensor:
    x, y = batch
    return nn.functional.cross_entropy(model(x), y)


def _images(batch_size: int, size: int, classes: int, device: torch.device) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 3, size, size, generator=generator)
    y = torch.randint(0, classes, (batch_size,), generator=generator)
    return x.to(device), y.to(device)


class Seq2Seq(nn.Module):
    """An encoder-decoder transformer for translation (pre-norm off, like fairseq's transformer)."""

    def __init__(self, vocab: int, dim: int, layers: int, heads: int, ffn: int, dropout: float = 0.1,
                 max_len: int = 256) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.positions = nn.Embedding(max_len, dim)
        self.transformer = nn.Transformer(dim, heads, layers, layers, ffn, dropout, batch_first=True)
        self.scale = dim ** 0.5

    def _embed(self, tokens: Tensor) -> Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        return self.embed(tokens) * self.scale + self.positions(positions)

    def forward(self, source: Tensor, target_in: Tensor) -> Tensor:
        mask = nn.Transformer.generate_square_subsequent_mask(target_in.shape[1], device=target_in.device)
        hidden = self.transformer(self._embed(source), self._embed(target_in), tgt_mask=mask, tgt_is_causal=True)
        return hidden @ self.embed.weight.T  # output projection shares the embedding, as fairseq's IWSLT setup


def _translate(model: nn.Module, batch: tuple[Tensor, ...]) -> Tensor:
    source, target = batch
    logits = model(source, target[:, :-1])
    return nn.functional.cross_entropy(logits.flatten(0, 1), target[:, 1:].flatten(), label_smoothing=0.1)


def _sentences(batch_size: int, length: int, vocab: int, device: torch.device) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    source = torch.randint(0, vocab, (batch_size, length), generator=generator)
    target = torch.randint(0, vocab, (batch_size, length + 1), generator=generator)
    return source.to(device), target.to(device)


def resnet18_cifar(device: torch.device, batch_size: int) -> Workload:
    """CIFAR ResNet-18 (3×3 stem, no max-pool), 32 px, 100 classes; momentum SGD as in the paper."""
    from torchvision.models import resnet18

    model = resnet18(num_classes=100)
    model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    model.maxpool = nn.Identity()
    return Workload("resnet18_cifar", model.to(device), _images(batch_size, 32, 100, device), _classify, "sgd",
                    {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4}, batch_size, CIFAR_TRAIN)


def vit_ti_cifar(device: torch.device, batch_size: int) -> Workload:
    """ViT-Ti with 4-pixel patches on 32 px (the XSAM paper's CIFAR-100 setting), AdamW."""
    import timm

    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4, num_classes=100)
    return Workload("vit_ti_cifar", model.to(device), _images(batch_size, 32, 100, device), _classify, "adamw",
                    {"lr": 1e-3, "betas": (0.9, 0.999), "weight_decay": 0.3}, batch_size, CIFAR_TRAIN)


def resnet50(device: torch.device, batch_size: int) -> Workload:
    """torchvision ResNet-50 at 224 px, 1000 classes, momentum SGD (the ImageNet setting)."""
    from torchvision.models import resnet50 as build

    return Workload("resnet50", build(num_classes=1000).to(device), _images(batch_size, 224, 1000, device),
                    _classify, "sgd", {"lr": 0.2, "momentum": 0.9, "weight_decay": 1e-4}, batch_size, IMAGENET_TRAIN)


def transformer_small(device: torch.device, batch_size: int) -> Workload:
    """A 2+2-layer, 256-wide translation transformer, 24-token sentences, vocabulary 1000."""
    model = Seq2Seq(vocab=1000, dim=256, layers=2, heads=4, ffn=1024)
    return Workload("transformer_small", model.to(device), _sentences(batch_size, 24, 1000, device), _translate,
                    "adamw", {"lr": 5e-4, "betas": (0.9, 0.98), "weight_decay": 1e-4}, batch_size, IWSLT_TRAIN)


def transformer_iwslt(device: torch.device, batch_size: int) -> Workload:
    """fairseq's transformer_iwslt_de_en shape: 6+6 layers, 512 wide, FFN 1024, 4 heads, 10k joint vocabulary."""
    model = Seq2Seq(vocab=10000, dim=512, layers=6, heads=4, ffn=1024, dropout=0.3)
    return Workload("transformer_iwslt", model.to(device), _sentences(batch_size, 32, 10000, device), _translate,
                    "adamw", {"lr": 5e-4, "betas": (0.9, 0.98), "weight_decay": 1e-4}, batch_size, IWSLT_TRAIN)


def convnet_tiny(device: torch.device, batch_size: int) -> Workload:
    """A two-conv network with BatchNorm on 8 px (the smoke mode's image model)."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                          nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10))
    return Workload("convnet_tiny", model.to(device), _images(batch_size, 8, 10, device), _classify, "sgd",
                    {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}, batch_size, CIFAR_TRAIN)


def transformer_tiny(device: torch.device, batch_size: int) -> Workload:
    """A 1+1-layer, 16-wide translation transformer (the smoke mode's sequence model)."""
    model = Seq2Seq(vocab=50, dim=16, layers=1, heads=2, ffn=32)
    return Workload("transformer_tiny", model.to(device), _sentences(batch_size, 6, 50, device), _translate,
                    "adamw", {"lr": 1e-3, "betas": (0.9, 0.98), "weight_decay": 1e-4}, batch_size, IWSLT_TRAIN)


WORKLOADS: dict[str, tuple[Callable[[torch.device, int], Workload], int, int]] = {
    # name: (builder, batch on CPU, batch on GPU)
    "resnet18_cifar": (resnet18_cifar, 32, 128),
    "vit_ti_cifar": (vit_ti_cifar, 32, 256),
    "transformer_small": (transformer_small, 32, 128),
    "resnet50": (resnet50, 8, 64),
    "transformer_iwslt": (transformer_iwslt, 16, 128),
    "convnet_tiny": (convnet_tiny, 8, 8),
    "transformer_tiny": (transformer_tiny, 4, 4),
}
CPU_SET = ("resnet18_cifar", "vit_ti_cifar", "transformer_small")
GPU_SET = ("resnet50", "vit_ti_cifar", "transformer_iwslt")
SMOKE_SET = ("convnet_tiny", "transformer_tiny")


def build(name: str, device: torch.device, batch_size: int | None = None) -> Workload:
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r}; choose from {sorted(WORKLOADS)}")
    builder, cpu_batch, gpu_batch = WORKLOADS[name]
    torch.manual_seed(0)
    return builder(device, batch_size or (gpu_batch if device.type == "cuda" else cpu_batch))
