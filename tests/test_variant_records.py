"""One record per modification: complete or refused, read by every consumer, and a student's own like a built-in."""

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers.clip import flags, variants
from helpers.clip.identity import run_identity
from helpers.core import config
from helpers.core.config import ConfigError
from helpers.store import runs
from helpers.study import ablation
from helpers.study.report import RunArtifacts, hyperparameters
from helpers.training import train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def registered():
    """Records a test adds, removed after it (the registry is the process's)."""
    names = []

    def add(name, *args, **kwargs):
        names.append(name)
        return variants.register(name, *args, **kwargs)

    yield add
    for name in names:
        flags.unregister(name)


def sigmoid_loss(image_features, text_features, logit_scale, negatives=None):
    """SigLIP-style: every (image, caption) pair of the batch is a binary question, "is this my caption?"."""
    logits = logit_scale * image_features.float() @ text_features.float().t() - 10.0
    labels = 2 * torch.eye(logits.shape[0], device=logits.device) - 1  # +1 on the diagonal, -1 elsewhere
    return -F.logsigmoid(labels * logits).sum() / logits.shape[0]


def test_a_loss_variant_is_one_record_and_every_consumer_shows_it(registered, workspace):
    registered("sigmoid", "loss: SigLIP's pairwise sigmoid instead of the softmax", "no batch-wide normalisation",
               loss=sigmoid_loss, loss_text="SigLIP-style pairwise sigmoid")  # fmt: skip
    cfg, paths = workspace
    result = train.train(cfg.replace(variant="sigmoid+head_ln", epochs=1, max_steps_per_epoch=2, run_name=None), paths, progress=False,
                         log=lambda m: None)  # fmt: skip
    assert result.metrics["loss"] == "SigLIP-style pairwise sigmoid"
    folder = runs.RunDir(result.run_dir)
    run = RunArtifacts(folder, json.loads(folder.config.read_text()), result.metrics, None, None, None)
    assert hyperparameters(run, lambda name: None)["loss"] == "SigLIP-style pairwise sigmoid"  # the report's loss row
    table = variants.changes_markdown(["sigmoid"])  # notebook 04's table
    assert "| `sigmoid` (yours) | loss: SigLIP's pairwise sigmoid" in table
    assert "`sigmoid` (yours)" in variants.changes_markdown()  # the docs' table is generated from the same records
    assert "def sigmoid_loss(" in variants.code_markdown(["sigmoid"])
    # and the loss is the one that trained: validation reports it too (not clip_loss)
    trainer = train.Trainer(cfg.replace(variant="sigmoid", epochs=1, run_name="sig-check"), paths, progress=False, log=lambda m: None)
    assert trainer.loss_fn.__wrapped__ is sigmoid_loss


def test_a_record_with_a_missing_part_is_refused():
    with pytest.raises(ValueError, match="say what it changes"):
        variants.register("nochange", "", "why", head=variants.head_bn)
    with pytest.raises(ValueError, match="changes nothing"):
        variants.register("nohook", "something", "why")
    with pytest.raises(ValueError, match="loss_text"):
        variants.register("noloss_text", "a loss", "why", loss=sigmoid_loss)
    with pytest.raises(TypeError, match="head must be a function or a class"):
        variants.register("notcallable", "a head", "why", head=3)
    with pytest.raises(TypeError, match="unknown part"):
        variants.register("typo", "a head", "why", haed=variants.head_bn)
    with pytest.raises(ValueError, match="exists already"):
        variants.register("head_ln", "my head", "why", head=variants.head_bn)
    with pytest.raises(ValueError, match="lowercase"):
        variants.register("Mine", "a head", "why", head=variants.head_bn)
    assert not {"nochange", "nohook", "noloss_text", "notcallable", "typo", "Mine"} & set(flags.records())


def test_every_built_in_record_is_complete():
    for name, record in flags.records().items():
        assert record.builtin and record.changes and record.why, name
        assert record.combines or (record.hooks() and record.source), name


def test_two_records_that_replace_the_same_part_cannot_combine(registered):
    registered("myhead", "a head", "why", head=variants.head_bn)
    with pytest.raises(ConfigError, match="head_ln and myhead both replace the head"):
        run_identity(config.from_params(VARIANT="myhead+head_ln"))  # the names are checked when a run is resolved
    assert flags.canonical("myhead+augment") == "augment+myhead"  # built-ins first, then the student's


class TinyHead(nn.Module):
    def __init__(self, in_dim, hidden_dim, embed_dim):
        super().__init__()
        self.proj = nn.Linear(in_dim, embed_dim)

    def forward(self, x):
        return self.proj(x)


class OtherTinyHead(nn.Module):
    def __init__(self, in_dim, hidden_dim, embed_dim):
        super().__init__()
        self.proj = nn.Linear(in_dim, embed_dim, bias=False)

    def forward(self, x):
        return self.proj(x)


def test_a_students_source_is_part_of_the_run_identity(registered, workspace):
    cfg, _ = workspace
    registered("mine", "head: one Linear", "why not", head=TinyHead)
    first = config.from_params({**cfg.to_dict(), "variant": "mine"})
    name = runs.run_name_for(first)
    assert run_identity(first)["variant_code"] == {"mine": flags.record("mine").source_digest}
    assert runs.run_name_for(first) == name  # stable while the code is
    registered("mine", "head: one Linear", "why not", head=OtherTinyHead)  # the cell run again with a changed line
    assert runs.run_name_for(first) != name
    assert "variant_code" not in run_identity(cfg)  # built-ins: the kit's code, not a digest


def _run_cell(text: str, cell: str) -> dict:
    """Execute ``text`` as a notebook kernel runs a cell: compiled under a file name whose lines linecache holds."""
    import linecache

    filename = f"<ipython-input-{cell}>"
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    namespace: dict = {"__name__": "__main__"}
    exec(compile(text, filename, "exec"), namespace)
    return namespace


STUDENT_CELL = """
from torch import nn
from helpers.clip.variants import register

SCALE = {scale}  # a module-level constant: outside the class, inside the cell


class ScaledHead(nn.Module):
    def __init__(self, in_dim, hidden_dim, embed_dim):
        super().__init__()
        self.linear = nn.Linear(in_dim, embed_dim)

    def forward(self, features):
        return SCALE * self.linear(features)


mine = register("cellwide", changes="head: a scaled Linear", why="a test", head=ScaledHead)
"""


def test_the_whole_cell_of_a_students_modification_is_its_identity(workspace):
    """A number outside the class (a module-level constant) changed in the cell: a new run, not the old one reused."""
    cfg, _ = workspace
    try:
        _run_cell(STUDENT_CELL.format(scale=0.5), "a")
        asked = config.from_params({**cfg.to_dict(), "variant": "cellwide"})
        first, code = runs.run_name_for(asked), flags.record("cellwide").source
        _run_cell(STUDENT_CELL.format(scale=0.5), "b")  # the same cell run again: the same run
        assert runs.run_name_for(asked) == first
        _run_cell(STUDENT_CELL.format(scale=0.25), "c")
        assert flags.record("cellwide").source == code  # the class reads the same ...
        assert runs.run_name_for(asked) != first  # ... but the cell differs: another run
    finally:
        flags.unregister("cellwide")


def test_a_kernel_without_the_students_cell_names_the_cell_to_run():
    code = "from helpers.clip import identity; from helpers.core import config; identity.run_identity(config.from_params(VARIANT='mine'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode != 0
    assert "unknown variant(s) ['mine']" in out.stderr and "the cell tagged `student-modification` in 04_ablation.ipynb" in out.stderr


def test_the_same_modification_from_a_py_file_on_the_command_line(workspace, tmp_path):
    cfg, paths = workspace
    module = tmp_path / "my_modification.py"
    module.write_text(textwrap.dedent('''
        from torch import nn

        from helpers.clip.variants import register


        class WideShortcutHead(nn.Module):
            def __init__(self, in_dim, hidden_dim, embed_dim):
                super().__init__()
                self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, embed_dim))
                self.shortcut = nn.Linear(in_dim, embed_dim, bias=False)

            def forward(self, x):
                return self.mlp(x) + self.shortcut(x)


        register("fromfile", "head with a shortcut", "a residual path", head=WideShortcutHead)
    '''))
    run_cfg = cfg.replace(variant="baseline", epochs=1, max_steps_per_epoch=2, run_name="from-file").to_dict()
    run_cfg["variant"] = "fromfile"  # a name the file registers: the config file is read after it is loaded
    path = tmp_path / "run.json"
    path.write_text(json.dumps(run_cfg))
    try:
        assert train.main(["--config", str(path), "--no-progress", "--modification", str(module)]) == 0
        metrics = json.loads((paths.runs_dir / "from-file" / "metrics.json").read_text())
        assert "class WideShortcutHead(nn.Module):" in metrics["variant_sources"]["fromfile"]
        assert metrics["model"]["head"] == "WideShortcutHead"
    finally:
        flags.unregister("fromfile")
    with pytest.raises(ConfigError, match="no such file"):
        train.main(["--config", str(path), "--modification", str(tmp_path / "absent.py")])


def test_no_module_outside_the_variant_code_tests_a_variants_name():
    """``"bank" in flags`` or ``flags & {"bank", "hardneg"}`` outside the records spreads a variant over the package."""
    names = set(flags.records())
    allowed = {ROOT / "helpers" / "clip" / "variants.py"}
    offenders = []
    for path in (ROOT / "helpers").rglob("*.py"):
        if path in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
                literals = [e for o in operands for e in ([o] if isinstance(o, ast.Constant) else getattr(o, "elts", []))]
                hit = [c.value for c in literals if isinstance(c, ast.Constant) and c.value in names]
                offenders += [f"{path.relative_to(ROOT)}:{node.lineno} {h!r}" for h in hit]
    assert not offenders, offenders


def test_ablation_json_keeps_each_variants_text_and_code(registered):
    registered("mine", "head: one Linear", "why not", head=TinyHead)
    described = variants.describe(["baseline", "head_ln", "mine+augment"])
    assert list(described) == ["head_ln", "augment", "mine"]
    assert described["mine"]["builtin"] is False and "class TinyHead(nn.Module):" in described["mine"]["code"]
    shown = ablation.variants_markdown(described)
    assert "| `mine` (yours) | head: one Linear | why not |" in shown and "class CaptionSafeAugment" in shown


def test_docs_list_every_built_in_record():
    """docs/notebooks.md's table of modifications is the records' own (``variants.changes_markdown()`` prints it)."""
    docs = (ROOT / "docs" / "notebooks.md").read_text()
    how = 'paste the table: python3 -c "from helpers.clip import variants; print(variants.changes_markdown())"'
    assert variants.changes_markdown() in docs, how


def test_the_docs_example_registers_a_working_loss(tmp_path):
    import re

    docs = (ROOT / "docs" / "notebooks.md").read_text()
    snippet = re.search(r"### Your own modification.*?```python\n(.*?)```", docs, flags=re.S).group(1)
    (tmp_path / "smooth_modification.py").write_text(snippet)
    try:
        train.load_modification(str(tmp_path / "smooth_modification.py"))  # as --modification loads it
        record = flags.record("smooth")
        img, txt = F.normalize(torch.randn(4, 8), dim=-1), F.normalize(torch.randn(4, 8), dim=-1)
        value = record.loss(img, txt, 14.3, None)
        assert value.item() > 0 and record.loss_text == "symmetric InfoNCE, label smoothing 0.1"
        assert flags.canonical("smooth+head_ln") == "head_ln+smooth"
    finally:
        flags.unregister("smooth")


def test_a_students_modification_resumes_after_sigkill_to_the_same_state(workspace, tmp_path):
    from test_train import _kill_then_resume_matches

    module = tmp_path / "resumable_modification.py"
    module.write_text(textwrap.dedent('''
        import torch.nn.functional as F
        from torch import nn

        from helpers.clip.variants import register


        class GatedHead(nn.Module):
            def __init__(self, in_dim, hidden_dim, embed_dim):
                super().__init__()
                self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, embed_dim))
                self.gate = nn.Linear(in_dim, embed_dim)

            def forward(self, x):
                return self.mlp(x) * self.gate(x).sigmoid()


        def smoothed(image_features, text_features, logit_scale, negatives=None):
            logits = logit_scale * image_features.float() @ text_features.float().t()
            labels = torch_arange(len(logits), logits.device)
            return 0.5 * (F.cross_entropy(logits, labels, label_smoothing=0.1) + F.cross_entropy(logits.t(), labels, label_smoothing=0.1))


        def torch_arange(n, device):
            import torch

            return torch.arange(n, device=device)


        register("gated", "head: an MLP times a sigmoid gate", "features pick what passes", head=GatedHead)
        register("smoothed", "label-smoothed InfoNCE", "softer targets", loss=smoothed, loss_text="InfoNCE, label smoothing 0.1")
    '''))
    train.load_modification(str(module))
    try:
        _kill_then_resume_matches(workspace, tmp_path, "gated+smoothed", epochs=2, modification=module)
    finally:
        flags.unregister("gated")
        flags.unregister("smoothed")


def per_pair_loss(image_features, text_features, logit_scale, negatives=None):
    """A student's slip: the per-pair losses, not their mean."""
    return 1 - (image_features.float() * text_features.float()).sum(dim=-1)


class TooNarrowHead(nn.Module):
    def __init__(self, in_dim, hidden_dim, embed_dim):
        super().__init__()
        self.linear = nn.Linear(in_dim, embed_dim // 2)

    def forward(self, features):
        return self.linear(features)


def log_of_zero_loss(image_features, text_features, logit_scale, negatives=None):
    """A student's slip: the log of a probability that can be 0."""
    return -torch.log(torch.zeros((), device=image_features.device)) * 0.0


class DoubleHead(nn.Module):
    """A head that switches the whole session to float64 (instead of giving its own layers a dtype)."""

    def __init__(self, in_dim, hidden_dim, embed_dim):
        super().__init__()
        torch.set_default_dtype(torch.float64)
        self.linear = nn.Linear(in_dim, embed_dim)

    def forward(self, features):
        return self.linear(features)


def broken_loss(image_features, text_features, logit_scale, negatives=None):
    return image_features @ text_features  # a slip: no transpose


class MisfitHead(nn.Module):
    """A head whose layer expects one feature more than the trunk gives: the first forward fails inside torch."""

    def __init__(self, in_dim, hidden_dim, embed_dim):
        super().__init__()
        self.linear = nn.Linear(in_dim + 1, embed_dim)

    def forward(self, features):
        return self.linear(features)


class BadDropoutHead(nn.Module):
    """A head whose constructor fails: a dropout probability above 1."""

    def __init__(self, in_dim, hidden_dim, embed_dim):
        super().__init__()
        self.drop = nn.Dropout(p=1.5)
        self.linear = nn.Linear(in_dim, embed_dim)

    def forward(self, features):
        return self.linear(self.drop(features))


YOUR_CODE_CASES = {  # a student's record, and the message that must name it (not a torch traceback, not the LR)
    "perpair": (dict(loss=per_pair_loss, loss_text="per-pair"),
                r"Your loss `per_pair_loss` .* returned a tensor of shape \(32,\) .*one floating-point"),
    "narrow": (dict(head=TooNarrowHead), r"returned a tensor of shape \(32, 32\) .* caption embeddings are a tensor of shape \(32, 64\)"),
    "logzero": (dict(loss=log_of_zero_loss, loss_text="log 0"),
                r"Your loss `log_of_zero_loss` .* returned nan on the first step, .*not a learning rate"),
    "double": (dict(head=DoubleHead), r"changed torch's default dtype from torch.float32 to torch.float64: .* restored"),
    "broken": (dict(loss=broken_loss, loss_text="broken"),
               r"Your loss `broken_loss` .* raised RuntimeError on the first step: .*mat1 and mat2"),
    "misfit": (dict(head=MisfitHead), r"Your code raised RuntimeError on the first training step, in `forward`, line \d+ of "
                                      r"test_variant_records\.py: mat1 and mat2"),
    "baddrop": (dict(head=BadDropoutHead), r"Your code raised ValueError while the image model was built, in `__init__`, line "
                                           r"\d+ of test_variant_records\.py: dropout probability"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(YOUR_CODE_CASES))
def test_a_students_wrong_shape_nan_exception_or_dtype_change_is_named_as_theirs(registered, workspace, name):
    """A loss of the wrong shape, a head too narrow, a NaN on the first step, an exception, a changed default dtype."""
    from helpers.training.assemble import YourCodeError

    cfg, paths = workspace
    hooks, message = YOUR_CODE_CASES[name]
    registered(name, "a student's slip", "a test", **hooks)
    with pytest.raises(YourCodeError, match=message):
        train.train(cfg.replace(variant=name, epochs=1, max_steps_per_epoch=1, run_name=None), paths, progress=False,
                    log=lambda m: None)  # fmt: skip
    assert torch.get_default_dtype() == torch.float32  # restored, whatever the head did
