"""Built-in models and ``build_model``: seeded so every node of a network starts identical."""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable

import torch
from torch import nn

ModelFactory = Callable[[tuple[int, ...], int], nn.Module]


class CNN1D(nn.Module):
    """Small strided 1-D CNN (MNIST-1D paper's ConvBase, ~5k params; ~0.94 test acc centrally).

    Accepts (N, L) or (N, C, L).
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, channels: int = 25) -> None:
        super().__init__()
        in_ch, length = (1, input_shape[0]) if len(input_shape) == 1 else (input_shape[0], input_shape[1])
        self.features = nn.Sequential(
            nn.Conv1d(in_ch, channels, 5, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        with torch.no_grad():  # infer flattened size instead of hand-computing strides
            n_flat = self.features(torch.zeros(1, in_ch, length)).numel()
        self.head = nn.Linear(n_flat, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(1)
        return self.head(self.features(x).flatten(1))


class MLP(nn.Module):
    def __init__(self, input_shape: tuple[int, ...], num_classes: int, hidden: int = 100) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(math.prod(input_shape), hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LogReg(nn.Module):
    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(math.prod(input_shape), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


class GNLeNet(nn.Module):
    """GN-LeNet (Hsieh et al.; used by MoDeST and SybilWall for CIFAR-10): 3 conv + GroupNorm, ~90k params.

    GroupNorm instead of BatchNorm because batch statistics are meaningless across non-IID nodes.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"gnlenet needs (C, H, W) input, got {input_shape}")
        c, h, w = input_shape

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 5, padding=2), nn.GroupNorm(2, cout), nn.ReLU(), nn.MaxPool2d(2)]

        self.features = nn.Sequential(*block(c, 32), *block(32, 32), *block(32, 64))
        self.head = nn.Linear(64 * (h // 8) * (w // 8), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


BUILTIN_MODELS: dict[str, ModelFactory] = {
    "cnn1d": CNN1D,
    "mlp": MLP,
    "logreg": LogReg,
    "gnlenet": GNLeNet,
}


def resolve_factory(spec: str) -> ModelFactory:
    """A built-in name, or ``package.module:factory`` with ``factory(input_shape, num_classes)``."""
    if spec in BUILTIN_MODELS:
        return BUILTIN_MODELS[spec]
    if ":" not in spec:
        raise ValueError(
            f"unknown model {spec!r}; built-ins: {sorted(BUILTIN_MODELS)} or 'pkg.module:factory'"
        )
    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot load model factory {spec!r}: {exc}") from exc
    if not callable(factory):
        raise TypeError(f"model factory {spec!r} is not callable")
    return factory


def build_model(spec: str, input_shape: tuple[int, ...], num_classes: int, seed: int) -> nn.Module:
    """Build a model with a deterministic initialisation for ``seed``.

    Uses a forked RNG so building a model neither depends on nor disturbs global torch RNG state.
    """
    factory = resolve_factory(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = factory(tuple(input_shape), num_classes)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model factory {spec!r} returned {type(model).__name__}, not nn.Module")
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
