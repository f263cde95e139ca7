"""Full fine-tuning: every parameter of the model trains. Used through
`geora.prepare_model(model, "fullft")`; the model is returned as it is, all grads on."""
from __future__ import annotations

import torch


def enable_full_training(model: torch.nn.Module) -> torch.nn.Module:
    model.requires_grad_(True)
    return model
