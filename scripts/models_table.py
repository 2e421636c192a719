"""Re-evaluate every shipped checkpoint with ``ringlet eval`` and print the README's models table."""

import json
import subprocess
import sys
from pathlib import Path

root = Path(__file__).resolve().parents[1]
rows = ["| checkpoint | model | dataset | test accuracy (ringlet eval) | recorded | made by |",
        "|---|---|---|---|---|---|"]
for meta_path in sorted((root / "models").glob("*.json")):
    if meta_path.name.count(".") > 1 or not meta_path.with_suffix(".safetensors").is_file():
        continue  # configs, reports, tables
    meta = json.loads(meta_path.read_text())
    stem = meta_path.stem
    out = subprocess.run([sys.executable, "-m", "ringlet.cli.main", "eval", "--model",
                          str(root / "models" / stem), "--dataset", meta["dataset"], "--json"],
                         capture_output=True, text=True, check=True)
    acc = json.loads(out.stdout)["accuracy"]
    rows.append(f"| `{stem}` | {meta['model']} | {meta['dataset']} | {acc:.4f} | "
                f"{meta['accuracy']:.4f} | `{meta.get('command', '')}` |")
print("\n".join(rows))
