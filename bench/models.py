"""Table of the model zoo from the cards (``python -m bench.models``): bench/results/models.md."""
from __future__ import annotations

from pathlib import Path

from vlaecodec.zoo import list_models

OUT = Path(__file__).resolve().parent / "results" / "models.md"


def main() -> None:
    lines = ["### Model zoo (from the cards in models/)", "",
             "| model | beta | data | decoder | likelihood | parameters | train time | test set | n | bits/dim | distortion | rate | command |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in list_models():
        cfg = c.get("config", {})
        hours = c.get("train_seconds", 0) / 3600
        trained = f"{hours:.2f} h" + (f" after {c['init']}" if c.get("init") else "")
        for test, r in c.get("results", {}).items():
            lines.append(f"| {c['name']} | {c.get('beta')} | {c.get('data')} | {cfg.get('decoder')} {cfg.get('window')} | "
                         f"{cfg.get('likelihood', 'categorical')} | {c.get('parameters')} | {trained} | {test} | "
                         f"{r['n']} | {r['bpd']:.4f} | {r['distortion_bpd']:.4f} | {r['rate_bpd']:.4f} | `{r['command']}` |")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
