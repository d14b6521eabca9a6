"""RNG states and weight checksums of every rank, for exact resume and DDP sanity."""

from __future__ import annotations

import json

import torch

from .checkpoint import decode_bytes, encode_bytes
from .distributed import DistContext
from .model import CharLSTM
from .records import dumps


def capture_rng(generator: torch.Generator, device: torch.device) -> dict[str, str]:
    state = {"torch": encode_bytes(torch.get_rng_state()),
             "sampler": encode_bytes(generator.get_state())}
    if device.type == "cuda":
        state["cuda"] = encode_bytes(torch.cuda.get_rng_state(device))
    return state


def restore_rng(state: dict[str, str], generator: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(decode_bytes(state["torch"]))
    generator.set_state(decode_bytes(state["sampler"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(decode_bytes(state["cuda"]), device)


def gather_rng(dist: DistContext, generator: torch.Generator,
               device: torch.device) -> list[dict[str, str]]:
    """Every rank's RNG state, so a resumed run with the same world size continues exactly."""
    mine = capture_rng(generator, device)
    if not dist.enabled:
        return [mine]
    blob = torch.frombuffer(bytearray(dumps(mine).ljust(32768).encode()), dtype=torch.uint8)
    parts = dist.gather_bytes(blob.to(device))
    return [json.loads(bytes(p.cpu().tolist()).decode()) for p in parts]


def weight_checksums(dist: DistContext, model: CharLSTM) -> list[float]:
    """One float64 checksum of the weights per rank: DDP replicas must stay identical."""
    total = torch.zeros(1, dtype=torch.float64)
    for parameter in model.parameters():
        weights = parameter.detach().double().cpu()
        total += weights.sum() + weights.square().sum()
    parts = dist.gather_bytes(total.view(torch.uint8).to(next(model.parameters()).device))
    return [float(p.cpu().view(torch.float64)[0]) for p in parts]
