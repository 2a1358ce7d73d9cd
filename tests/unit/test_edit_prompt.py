"""bench.edit_prompt sorts a recorded child-as-edits reply's blocks against the parent the model was shown."""
import pytest

from bench.edit_prompt import example_blocks, outcome, shown_code
from nasgraph.agents.prompts import PROJECT_DIR

PARENT = """class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.conv1 = nn.Conv2d(in_shape[1], 32, 3, padding=1)
        self.fc = nn.Linear(32, out_shape[0])
    def forward(self, x):
        return self.fc(torch.flatten(self.conv1(x), 1))
"""
USER = f"Task: ...\nThe current module (accuracy 0.903, 104.7k parameters):\n```python\n{PARENT}```\n\nChange to make:\n..."


def block(search: str, replace: str) -> str:
    return f"<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n"


def test_the_parent_shown_is_read_from_the_prompt():
    assert shown_code(USER) == PARENT
    with pytest.raises(ValueError):
        shown_code("Task: no module here")


def test_each_block_is_applied_a_copy_the_example_or_unmatched():
    examples = example_blocks((PROJECT_DIR / "code_generator.edit_system.md").read_text())
    assert examples, "the edit system prompt shows the format on an example"
    reply = (block("        self.fc = nn.Linear(32, out_shape[0])",
                   "        self.drop = nn.Dropout(0.2)\n        self.fc = nn.Linear(32, out_shape[0])")
             + block("        self.conv1 = nn.Conv2d(in_shape[1], 32, 3, padding=1)",
                     "        self.conv1 = nn.Conv2d(in_shape[1], 32, 3, padding=1)")
             + block("\n".join(examples[0]), "        pass")
             + block("        self.conv9 = nn.Conv2d(1, 2, 3)", "        self.conv9 = nn.Conv2d(1, 4, 3)"))
    assert outcome(PARENT, reply, examples) == {"blocks": 4, "applied": 1, "copy": 1, "example": 1,
                                                "unmatched": 1, "changed": True}
    assert outcome(PARENT, block("        self.conv9 = nn.Conv2d(1, 2, 3)", "x"), examples)["changed"] is False
