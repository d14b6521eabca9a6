"""The model card (README.md) written beside every exported artifact."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bard_sdk
from bard.training.evaluate import bits_per_char
from bard.training.fsutil import atomic_write_text
from bard_sdk.display import printable
from bard_sdk.manifest import ManifestContent

SAMPLE_TEMPERATURES = (0.5, 0.8, 1.0)


@dataclass(frozen=True)
class HeldOut:
    name: str
    characters: int
    skipped: int
    nats_per_char: float
    bits_per_char: float


def regularisation(provenance: dict[str, Any]) -> str:
    """Dropout, recurrent weight drop and weight decay: the knobs that fight overfitting."""
    model_config = provenance["model_config"]
    return (f"dropout {model_config['dropout']}, recurrent weight drop "
            f"{model_config['weight_drop']}, weight decay "
            f"{provenance['train_config']['weight_decay']}")


def check_rows(prov: dict[str, Any]) -> list[str]:
    """bard_sdk's own scores: on every stream, or on evenly spaced windows of a big split."""
    check = prov["sdk_check"]
    scope = ("all" if check["chars"] >= prov["split"]["val_chars"] else
             f"{check['chars']:,} ({check['streams']} evenly spaced windows)")
    rows = [f"| float32 (`model.onnx`, bard_sdk) | {scope} | {check['sdk_nats']:.4f} | "
            f"{bits_per_char(check['sdk_nats']):.4f} |"]
    if "int8_nats" in check:
        rows.append(f"| int8 (`model.int8.onnx`, bard_sdk) | {scope} | {check['int8_nats']:.4f} "
                    f"| {bits_per_char(check['int8_nats']):.4f} |")
    return rows


def lineage_lines(prov: dict[str, Any]) -> list[str]:
    """Where a fine-tuned model came from (nothing for one trained from scratch)."""
    parent = prov.get("parent")
    if parent is None:
        return []
    added = parent["added_characters"]
    shown = ", ".join(f"`{printable(c)}`" if c.isprintable() and c != "`" else
                      f"U+{ord(c):04X}" for c in added)
    return ["", "## Lineage", "",
            f"Fine-tuned from `{printable(parent['name'])}` ({parent['kind']}, weights sha256 "
            f"`{parent['sha256']}`). Its {parent['vocab_size']} characters keep their ids; "
            + (f"{len(added)} added after them: {shown}." if added else
               "the new text added none.")]


def write_card(directory: Path, final_name: str, manifest: ManifestContent,
               model: bard_sdk.Model, heldout: list[HeldOut], notes: str,
               command: str | None) -> None:
    prov = manifest.provenance
    sizes = manifest.model
    cfg = prov["train_config"]
    lines = [
        f"# {manifest.name}: a character-level LSTM language model",
        "",
        f"Trained with bard {manifest.bard_version} on `{prov['corpus']['name']}` "
        f"({prov['corpus']['length']:,} characters, sha256 `{prov['corpus']['sha256'][:16]}…`), "
        f"first {1 - prov['split']['val_fraction']:.0%} for training, the last "
        f"{prov['split']['val_fraction']:.0%} for validation.",
        "",
        "## Sizes",
        "",
        f"- {sizes.num_layers} LSTM layers x {sizes.hidden_size} hidden, embedding "
        f"{sizes.embedding_dim}, vocabulary {sizes.vocab_size} characters",
        f"- {sizes.parameters:,} parameters; {prov['steps']:,} training steps of "
        f"{cfg['batch_size']} x {cfg['seq_len']} characters",
        f"- regularisation: {regularisation(prov)}; seed {cfg['seed']}",
        "",
        f"## Metrics (validation split, {prov['split']['val_chars']:,} characters in "
        f"{prov['val_streams']} contiguous streams, the state carried across each)",
        "",
        "| model | characters scored | nats/char | bits/char |",
        "| --- | --- | --- | --- |",
        f"| float32 (`model.onnx`, PyTorch) | all | {prov['val_loss_nats']:.4f} | "
        f"{prov['val_bpc']:.4f} |",
    ]
    lines += check_rows(prov)
    lines += lineage_lines(prov)
    if heldout:
        lines += ["", "## Held-out texts (never trained on)", "",
                  "Characters outside the vocabulary are skipped (`on_unknown='skip'`): the "
                  "text is scored as if they were absent.", "",
                  "| text | characters | skipped | nats/char | bits/char |",
                  "| --- | --- | --- | --- | --- |"]
        lines += [f"| {h.name} | {h.characters:,} | {h.skipped} | {h.nats_per_char:.4f} | "
                  f"{h.bits_per_char:.4f} |" for h in heldout]
    prompt = prov["prompt"]
    lines += ["", f"## Samples (prompt {prompt!r} from the validation split, 300 characters, "
                  "seed 7)", ""]
    for temperature in SAMPLE_TEMPERATURES:
        text = model.generate(prompt, 300, temperature=temperature, seed=7)
        lines += [f"temperature {temperature}:", "", "````text", prompt + text, "````", ""]
    lines += [
        "## How to load", "",
        "```python", "import bard_sdk",
        f"model = bard_sdk.load({final_name!r})  # this directory",
        f"print(model.generate({prompt!r}, 300, temperature=0.8, seed=1))", "```", "",
        "Parity with PyTorch (checked at export): max |logits diff| "
        f"{prov['parity']['max_logits_diff']:.1e}, max |state diff| "
        f"{prov['parity']['max_state_diff']:.1e}, {prov['parity']['greedy_chars_identical']} "
        "greedy characters identical.",
    ]
    if command:
        lines += ["", "## Reproduce", "", "```sh", command, "```"]
    if notes:
        lines += ["", notes.strip()]
    atomic_write_text(directory / "README.md", "\n".join(lines) + "\n")
