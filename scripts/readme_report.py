"""Put the latest suite's headline table into README.md (between the report markers)."""

import json
import re
import sys
from pathlib import Path

from ringlet.report import headline

root = Path(__file__).resolve().parents[1]
result = json.loads(Path(sys.argv[1]).read_text())
readme = root / "README.md"
text = readme.read_text()
block = (f"<!-- report:start -->\n_From `{result.get('command', '')}` "
         f"(`make report` regenerates it):_\n\n{headline(result)}\n<!-- report:end -->")
text, n = re.subn(r"<!-- report:start -->.*?<!-- report:end -->", block, text, flags=re.S)
if not n:
    raise SystemExit("README.md has no <!-- report:start --> … <!-- report:end --> block")
readme.write_text(text)
print(f"README.md: headline table from {sys.argv[1]}")
