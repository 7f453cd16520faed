"""Inside the lab's kernel: the stock-stack guests on one VM boot, one after the other.

The silent cut under the stock stack (guest_stock_cut.py, which repairs what it cut), then
doctor with each pitfall broken and fixed (guest_doctor.py, which leaves the lab fixed),
then apply from nothing (guest_apply.py, which deletes the tunnels first, so it goes last).
Each writes its facts next to this script's; a guest that raises is recorded and the next
one still runs. Writes {"parts": {name: facts or null}, "errors": {name: message}}.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import guest_apply
import guest_doctor
import guest_stock_cut

PARTS: dict[str, Callable[[Path], None]] = {
    "stock_cut": guest_stock_cut.main,
    "doctor": guest_doctor.main,
    "apply": guest_apply.main,
}


def main() -> None:
    out = Path(sys.argv[1])
    facts: dict[str, dict[str, object]] = {"parts": {}, "errors": {}}
    for name, run in PARTS.items():
        part = out.with_name(f"{name}.json")
        print(f"guest_stock_lab: {name} ...", flush=True)
        try:
            run(part)
        except Exception:
            facts["errors"][name] = traceback.format_exc()[-3000:]
        # What a guest wrote before it failed is still worth judging.
        facts["parts"][name] = json.loads(part.read_text()) if part.exists() else None
        out.write_text(json.dumps(facts, indent=2))


if __name__ == "__main__":
    main()
