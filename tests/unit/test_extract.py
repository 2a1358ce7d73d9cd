"""Code extraction from chat replies: every reply shape the small models were seen to produce."""
from __future__ import annotations

import ast

from nasgraph.agents.extract import ensure_imports, extract, extract_code

MODULE = """import torch
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.conv = nn.Conv2d(in_shape[1], 16, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, out_shape[0])

    def forward(self, x):
        x = self.pool(F.relu(self.conv(x)))
        return self.fc(torch.flatten(x, 1))
"""


def _same_module(code: str) -> None:
    assert ast.dump(ast.parse(code)) == ast.dump(ast.parse(MODULE))


def test_python_fence_with_prose_around() -> None:
    reply = f"Sure! Here is the model:\n\n```python\n{MODULE}```\n\nIt uses global pooling."
    ex = extract(reply)
    assert ex.source == "fence" and not ex.added_imports
    _same_module(ex.code)


def test_fence_without_language_and_py_tag() -> None:
    _same_module(extract_code(f"```\n{MODULE}```"))
    _same_module(extract_code(f"```py\n{MODULE}```"))


def test_unclosed_fence_from_truncated_reply() -> None:
    cut = MODULE[: MODULE.index("    def forward")]
    ex = extract(f"Here you go:\n```python\n{cut}")
    assert ex.source == "unclosed_fence"
    assert ex.code.startswith("import torch\n") and "class Net(nn.Module)" in ex.code
    assert "def forward" not in ex.code


def test_several_fences_pick_the_one_defining_net() -> None:
    reply = (
        "Install first:\n```bash\npip install torch torchvision torchaudio && echo a very long line\n```\n"
        "A helper:\n```python\ndef helper(x):\n    return x * 2  # a fairly long helper line to be longest\n"
        "# padding padding padding padding padding padding padding padding padding padding padding\n```\n"
        f"The model:\n```python\n{MODULE}```\nUsage:\n```python\nm = Net((1, 1, 28, 28), (10,), {{}}, 'cpu')\n```"
    )
    _same_module(extract_code(reply))


def test_several_fences_without_net_pick_the_longest() -> None:
    reply = "```python\nx = 1\n```\ntext\n```python\nimport torch\ny = torch.zeros(3)\nz = y + 1\n```"
    assert extract_code(reply) == "import torch\ny = torch.zeros(3)\nz = y + 1\n"


def test_before_and_after_fences_take_the_later_valid_one() -> None:
    broken = MODULE.replace("return self.fc(torch.flatten(x, 1))", "return self.fc(x)")
    reply = f"Original:\n```python\n{broken}```\nFixed:\n```python\n{MODULE}```"
    _same_module(extract_code(reply))


def test_later_net_cut_off_falls_back_to_earlier_valid_one() -> None:
    reply = f"```python\n{MODULE}```\nAlternative:\n```python\n{MODULE[:-20]}"
    _same_module(extract_code(reply))


def test_no_fences_take_from_first_import_and_drop_trailing_prose() -> None:
    reply = f"Here is a model for the task.\n{MODULE}\nThis network is small and fast.\nHope it helps!"
    ex = extract(reply)
    assert ex.source == "bare"
    _same_module(ex.code)


def test_no_fences_starting_with_class_adds_imports() -> None:
    body = MODULE[MODULE.index("class Net"):]
    ex = extract("The answer:\n" + body)
    assert ex.added_imports == ["import torch", "import torch.nn as nn", "import torch.nn.functional as F"]
    _same_module(ex.code)


def test_think_section_is_ignored() -> None:
    reply = f"<think>maybe class Net with ```python fences?</think>\n```python\n{MODULE}```"
    _same_module(extract_code(reply))


def test_empty_and_prose_only_replies() -> None:
    assert extract("").source == "empty" and extract("").code == ""
    assert extract("I cannot help with that.").code == ""


def test_imports_dropped_during_repair_are_restored_in_order() -> None:
    code = MODULE.replace("import torch.nn as nn\n", "").replace("import torch.nn.functional as F\n", "")
    fixed, added = ensure_imports(code)
    assert added == ["import torch.nn as nn", "import torch.nn.functional as F"]
    assert fixed.splitlines()[:3] == ["import torch", "import torch.nn as nn", "import torch.nn.functional as F"]
    compile(fixed, "<candidate>", "exec")


def test_other_import_styles_count_as_bound() -> None:
    code = "from torch import nn\nfrom torch.nn import functional as F\nimport torch.nn\nx = nn.ReLU(); y = F.relu; z = torch.ones(1)\n"
    assert ensure_imports(code) == (code, [])


def test_math_import_added_and_unparseable_code_judged_by_text() -> None:
    code, added = ensure_imports("import torch\nk = math.sqrt(2)\n")
    assert added == ["import math"] and code.startswith("import torch\nimport math\n")
    broken = "import torch\nclass Net(nn.Module):\n    def __init__(self\n        self.a = F.relu\n"
    _, added = ensure_imports(broken)
    assert added == ["import torch.nn as nn", "import torch.nn.functional as F"]


def test_future_import_stays_first() -> None:
    code, _ = ensure_imports("from __future__ import annotations\nx = torch.zeros(1)\n")
    assert code.splitlines()[:2] == ["from __future__ import annotations", "import torch"]


def test_closing_fence_glued_to_last_line() -> None:
    ex = extract(f"```python\n{MODULE.rstrip()}```\nThat's it.")
    assert ex.source == "fence"
    _same_module(ex.code)


def test_markdown_indented_code_block_is_dedented() -> None:
    indented = "\n".join(("    " + ln) if ln else "" for ln in MODULE.splitlines())
    ex = extract(f"Here is the model:\n\n{indented}\n\nIt is small.")
    assert ex.source == "bare"
    _same_module(ex.code)


def test_fence_nested_in_a_list_item_is_dedented() -> None:
    indented = "\n".join(("   " + ln) if ln else "" for ln in MODULE.splitlines())
    _same_module(extract_code(f"1. The model:\n   ```python\n{indented}\n   ```\n2. Train it."))


def test_regression_bare_code_then_closing_fence_only():
    # Seen from the 1.5B model: a bare module that ends with a lone closing fence came back empty.
    reply = "# Design: plain CNN\n\nimport torch\nimport torch.nn as nn\n\nclass Net(nn.Module):\n    pass\n```"
    got = extract(reply)
    assert got.source == "bare"
    assert "class Net(nn.Module)" in got.code and "```" not in got.code


def test_regression_bare_code_then_stray_fence_then_prose():
    # Seen from the 1.5B model in a repair: the prose after a stray fence was taken as the code.
    reply = ("import torch\nimport torch.nn as nn\n\nclass Net(nn.Module):\n    pass\n```\n\n"
             "Fix the error and reply with the complete corrected module in one block.")
    got = extract(reply)
    assert "class Net(nn.Module)" in got.code and "Fix the error" not in got.code


def test_regression_usage_script_after_the_module_is_dropped() -> None:
    # Seen from the 1.5B model: a torchvision training script after the module, cut at max_tokens.
    script = ("\n# Example usage\nimport torch\nfrom torchvision import datasets, transforms\n\n"
              "transform = transforms.Compose([\n    transforms.ToTensor(),\n])\n"
              "model = Net((1, 1, 28, 28), (10,), {}, torch.device('cpu'))\nfor epoch in range(3):\n    optimizer.")
    _same_module(extract_code(f"```python\n{MODULE}{script}"))
    _same_module(extract_code(f"```python\n{MODULE}\nif __name__ == '__main__':\n    print(Net)\n```"))
    # helper blocks and functions after Net are part of the module
    helper = "\n\nclass Block(nn.Module):\n    pass\n\n\ndef supported_hyperparameters():\n    return {'lr'}\n"
    assert extract_code(f"```python\n{MODULE}{helper}```").endswith("return {'lr'}\n")
